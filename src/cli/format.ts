import type { PortEntry, ReconcileReport, StatusReport } from '../admin/contract';

/** Pure: what the CLI prints for each admin answer. */

const short = (id: string) => id.slice(0, 12);

/** Columns padded to their widest cell, two spaces apart (as `docker ps`). */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  '));
}

function duration(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${d > 0 ? `${d}d` : ''}${d > 0 || h > 0 ? `${h}h` : ''}${m}m${s % 60}s`;
}

export function formatStatus(s: StatusReport): string {
  const store = s.store.ok ? `store ok (${s.store.ms} ms)` : `store FAILING: ${s.store.error}`;
  const lines = [`tsnet ${s.version}, ${s.ready ? 'ready' : 'not ready'}, up ${duration(s.uptimeS)}, ${store}`, ''];
  const pending = (p: boolean) => (p ? ' (pending)' : '');
  lines.push(
    ...table(
      ['NETWORK', 'MODE', 'LINK', 'SUBNETS', 'ENDPOINTS', 'POOL USE'],
      s.networks.map((n) => [
        short(n.id) + pending(n.pending),
        n.mode + (n.internal ? ' internal' : ''),
        n.link,
        n.subnets.join(',') || '-',
        String(n.endpoints),
        n.poolUse ? `${n.poolUse.used}/${n.poolUse.size}` : '-',
      ]),
    ),
  );
  lines.push('');
  lines.push(
    ...table(
      ['ENDPOINT', 'NETWORK', 'ADDRESSES', 'MAC', 'LINK', 'JOINED', 'PORTS'],
      s.endpoints.map((e) => [short(e.id) + pending(e.pending), short(e.networkId), e.addresses.join(',') || '-', e.mac ?? '-', e.link, e.joined ? 'yes' : 'no', String(e.ports)]),
    ),
  );
  return lines.join('\n');
}

/** `80/tcp -> 0.0.0.0:8080`, exactly as `docker port` prints a binding (IPv6 host addresses in brackets). */
export function dockerPortLine(p: PortEntry): string {
  const host = p.hostIp ?? (p.containerIp.includes(':') ? '::' : '0.0.0.0');
  return `${p.containerPort}/${p.proto} -> ${host.includes(':') ? `[${host}]` : host}:${p.hostPort}`;
}

/** docker port's order: by container port, then protocol, IPv4 host addresses before IPv6. */
function byPort(a: PortEntry, b: PortEntry): number {
  const v6 = (p: PortEntry) => Number((p.hostIp ?? p.containerIp).includes(':'));
  return a.containerPort - b.containerPort || a.proto.localeCompare(b.proto) || v6(a) - v6(b) || a.hostPort - b.hostPort;
}

/**
 * One container's ports: `docker port CONTAINER`'s lines. Every container's: each line led by the container's name
 * (the endpoint's id when Docker's API did not name it).
 */
export function formatPorts(ports: readonly PortEntry[], oneContainer: boolean): string[] {
  const sorted = [...ports].sort(byPort);
  if (oneContainer) return sorted.map(dockerPortLine);
  const owner = (p: PortEntry) => p.containerName ?? short(p.endpointId);
  const rows = sorted.sort((a, b) => owner(a).localeCompare(owner(b))).map((p) => [owner(p), dockerPortLine(p)]);
  return table(['CONTAINER', 'PORT'], rows).slice(1);
}

export function formatReconcile(r: ReconcileReport): string[] {
  if (r.repairs.length === 0) return [r.applied ? 'nothing to repair: the host matched the records' : 'nothing to repair: the host matches the records'];
  const head = r.applied ? `applied ${r.repairs.length} repair(s):` : `${r.repairs.length} repair(s) planned (dry run, nothing changed):`;
  return [head, ...r.repairs.map((x) => `  ${x.description}`)];
}
