import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import { tsnetError } from '../errors';
import type { FwPort } from '../kernel/contract';
import { log } from '../log';

/** One port to publish, before a host port is chosen. */
export interface PortWant {
  proto: FwPort['proto'];
  family: 4 | 6;
  /** undefined = every local address of the family. */
  hostIp?: string;
  /** Inclusive host port range; [p, p] for a fixed port. */
  hostPorts: [number, number] | 'ephemeral';
  containerIp: string;
  containerPort: number;
}

type Holder = net.Server | dgram.Socket;

interface Reservation {
  port: FwPort;
  family: 4 | 6;
  endpointId: string;
  /** The socket that keeps the port taken on the host; none for SCTP (no socket API in Node). */
  holder?: Holder;
}

const portText = (w: { proto: string; hostIp?: string; family: number }, port: number) =>
  `${w.hostIp ?? (w.family === 6 ? '[::]' : '0.0.0.0')}:${port}/${w.proto}`;

/**
 * Host ports of published container ports, host-wide. A port is reserved by holding a socket bound to it, like
 * dockerd does without its proxy: nothing else on the host can take it, and a port something else holds is refused
 * up front. DNAT diverts the traffic before it could reach the socket.
 */
export class PortAllocator {
  private readonly reservations: Reservation[] = [];
  private ephemeral: [number, number] | undefined;

  private clash(w: { proto: string; family: number; hostIp?: string }, port: number): Reservation | undefined {
    return this.reservations.find(
      (r) => r.family === w.family && r.port.proto === w.proto && r.port.hostPort === port && (r.port.hostIp === undefined || w.hostIp === undefined || r.port.hostIp === w.hostIp),
    );
  }

  private ephemeralRange(): [number, number] {
    if (!this.ephemeral) {
      const text = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
      this.ephemeral = [text[0] ?? 32768, text[1] ?? 60999];
    }
    return this.ephemeral;
  }

  /** Binds a socket on the port; resolves undefined when the kernel says it is taken. */
  private static hold(w: PortWant, port: number): Promise<Holder | undefined> {
    const address = w.hostIp ?? (w.family === 6 ? '::' : '0.0.0.0');
    return new Promise((resolve, reject) => {
      const fail = (err: NodeJS.ErrnoException) => {
        if (err.code === 'EADDRINUSE' || err.code === 'EACCES') resolve(undefined);
        else if (err.code === 'EADDRNOTAVAIL') reject(tsnetError('TSN_INVALID_OPTION', `HostIP "${address}" is not an address of this host`));
        else reject(tsnetError('TSN_KERNEL', `cannot reserve ${portText(w, port)}`, err));
      };
      // Once bound, an error (e.g. EMFILE on accept) is logged: an unhandled 'error' event would end the process.
      const held = <S extends Holder>(s: S): S => {
        s.off('error', fail);
        s.on('error', (err: Error) => log.warn('socket holding a published port failed', { port: portText(w, port), error: err.message }));
        return s;
      };
      if (w.proto === 'udp') {
        const s = dgram.createSocket({ type: w.family === 6 ? 'udp6' : 'udp4', ipv6Only: w.family === 6 });
        s.once('error', fail);
        s.bind({ address, port, exclusive: true }, () => resolve(held(s)));
      } else {
        // Only the bound port matters. A connection reaches the socket only when DNAT is missing (e.g. after
        // `nft flush ruleset`): it is destroyed unread at once, so fds never pile up.
        const s = net.createServer({ pauseOnConnect: true }, (c) => c.destroy());
        s.once('error', fail);
        s.listen({ host: address, port, ipv6Only: w.family === 6, exclusive: true }, () => resolve(held(s)));
      }
    });
  }

  private async take(w: PortWant, port: number, endpointId: string): Promise<Reservation | undefined> {
    if (this.clash(w, port)) return undefined;
    let holder: Holder | undefined;
    if (w.proto !== 'sctp') {
      holder = await PortAllocator.hold(w, port);
      if (!holder) return undefined;
    }
    // Re-check: another call may have taken it while the socket was binding.
    if (this.clash(w, port)) {
      holder?.close();
      return undefined;
    }
    const r: Reservation = {
      port: { proto: w.proto, ...(w.hostIp !== undefined ? { hostIp: w.hostIp } : {}), hostPort: port, containerIp: w.containerIp, containerPort: w.containerPort },
      family: w.family,
      endpointId,
      ...(holder ? { holder } : {}),
    };
    this.reservations.push(r);
    return r;
  }

  /** Reserves every want, or none (TSN_PORT_IN_USE naming the first port that could not be had). */
  async reserve(endpointId: string, wants: PortWant[]): Promise<FwPort[]> {
    const got: Reservation[] = [];
    try {
      for (const w of wants) {
        const r = w.hostPorts === 'ephemeral' ? await this.takeEphemeral(w, endpointId) : await this.takeInRange(w, w.hostPorts, endpointId);
        got.push(r);
      }
    } catch (err) {
      this.drop(got);
      throw err;
    }
    return got.map((r) => r.port);
  }

  private async takeInRange(w: PortWant, [lo, hi]: [number, number], endpointId: string): Promise<Reservation> {
    for (let p = lo; p <= hi; p++) {
      const r = await this.take(w, p, endpointId);
      if (r) return r;
    }
    const what = lo === hi ? portText(w, lo) : `${portText(w, lo)}-${hi}`;
    throw tsnetError('TSN_PORT_IN_USE', `host port ${what} is already in use`);
  }

  private async takeEphemeral(w: PortWant, endpointId: string): Promise<Reservation> {
    const [lo, hi] = this.ephemeralRange();
    const span = hi - lo + 1;
    const start = Math.floor(Math.random() * span);
    // A bounded scan from a random start: the range is large and sparsely used.
    for (let i = 0; i < Math.min(span, 512); i++) {
      const r = await this.take(w, lo + ((start + i) % span), endpointId);
      if (r) return r;
    }
    throw tsnetError('TSN_PORT_IN_USE', `no free ephemeral host port for ${w.proto} in ${lo}-${hi}`);
  }

  /** Takes the ports an endpoint had before a restart; a port something else grabbed meanwhile is logged. */
  async restore(endpointId: string, ports: FwPort[]): Promise<void> {
    for (const p of ports) {
      const family = p.containerIp.includes(':') ? 6 : 4;
      const w: PortWant = { ...p, family, hostPorts: [p.hostPort, p.hostPort] };
      if (!(await this.take(w, p.hostPort, endpointId))) {
        log.error('published port taken by another process while tsnet was down', { endpointId, port: portText(w, p.hostPort) });
      }
    }
  }

  /** Whether this process holds ports for the endpoint. */
  holds(endpointId: string): boolean {
    return this.reservations.some((r) => r.endpointId === endpointId);
  }

  /** Frees everything held for the endpoint. */
  release(endpointId: string): void {
    this.drop(this.reservations.filter((r) => r.endpointId === endpointId));
  }

  private drop(rs: Reservation[]): void {
    for (const r of rs) {
      r.holder?.close();
      const i = this.reservations.indexOf(r);
      if (i >= 0) this.reservations.splice(i, 1);
    }
  }

  /** Closes every socket (shutdown). */
  closeAll(): void {
    this.drop([...this.reservations]);
  }
}
