import fs from 'node:fs';
import path from 'node:path';

const REPO = path.resolve(__dirname, '..', '..');

test("the README's Compose section shows examples/compose.yml (the file the compose e2e runs) as it is", () => {
  const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## Compose\n'));
  const shown = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
  expect(shown).toBe(fs.readFileSync(path.join(REPO, 'examples', 'compose.yml'), 'utf8'));
});
