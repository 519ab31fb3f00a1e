import type { Kernel, LinkInfo } from '../kernel/contract';
import type { HostView } from './mode';

/**
 * The host's links as one CreateNetwork sees them, each read at most once: every read spawns `ip`, and under the
 * driver-wide lock nothing else changes tsnet's links meanwhile. Once the whole list was read (a child-link mode
 * looks for links stacked on its parent), single lookups answer from it; before, they read only that link (a bridge
 * create never lists every veth on the host).
 */
export function readOnce(kernel: Kernel): Pick<HostView, 'link' | 'links'> {
  let all: Promise<LinkInfo[]> | undefined;
  const one = new Map<string, Promise<LinkInfo | undefined>>();
  return {
    links: () => (all ??= kernel.links()),
    link: (name) => {
      if (all) return all.then((links) => links.find((l) => l.name === name));
      let got = one.get(name);
      if (!got) one.set(name, (got = kernel.link(name)));
      return got;
    },
  };
}
