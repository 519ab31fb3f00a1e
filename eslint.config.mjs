// @ts-check
// Lint rules for src/, test/ and bench/ (`make lint`). Formatting is prettier's job (.prettierrc.json), so nothing
// here is about layout.
import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

const CHILD_PROCESS_SHELL = 'runs a command line through a shell: use spawn/execFile with an argv array, no shell';

export default tseslint.config(
  { ignores: ['dist/', '.tmp/', 'coverage/', 'node_modules/', '**/*.js', '**/*.mjs'] },
  eslint.configs.recommended,
  tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // A promise nobody awaits hides its rejection (issue item 5 was one, `void`-ed): `void` is no excuse either.
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: false }],
      // A new union member must be handled everywhere; a `default` does not count as handling it.
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: false, requireDefaultForNonUnion: true }],
      // `x as T` on data from outside (wire, store, kernel output) must be a parse (zod), not a promise to the compiler.
      '@typescript-eslint/no-unsafe-type-assertion': 'error',
      // Numbers in messages are this code base's normal; objects, undefined and the like stay errors.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      // `(x) => resolve(x)` as a callback is fine; void values elsewhere are not.
      '@typescript-eslint/no-confusing-void-expression': ['error', { ignoreArrowShorthand: true }],
      // An async function without await still turns a throw into a rejection, which callers of a Promise-returning
      // contract (the fake kernel's failure injection, EndpointOperInfo) rely on.
      '@typescript-eslint/require-await': 'off',
      // `const { a, ...rest } = o` drops `a` on purpose.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
      'no-restricted-imports': [
        'error',
        {
          paths: ['child_process', 'node:child_process'].map((name) => ({ name, importNames: ['exec', 'execSync'], message: CHILD_PROCESS_SHELL })),
        },
      ],
      'no-restricted-syntax': [
        'error',
        {
          // Named imports only, so the rule above sees which functions are used.
          selector: 'ImportDeclaration[source.value=/^(node:)?child_process$/] > :matches(ImportNamespaceSpecifier, ImportDefaultSpecifier)',
          message: 'import child_process functions by name (exec/execSync are banned)',
        },
        { selector: "Property[key.name='shell']:not([value.value=false])", message: CHILD_PROCESS_SHELL },
      ],
    },
  },
  {
    // Tests and the benchmark read their own fixtures and tools' output: casts there are allowed. jest's asymmetric
    // matchers (expect.objectContaining, expect.stringContaining, ...) are typed `any`, which is all the unsafe-*
    // rules below would report there.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-type-assertion': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // A wrong `!` in a test throws, which fails the test: the assertion it stands for.
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
);
