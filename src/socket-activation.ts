/**
 * systemd socket activation (the sd_listen_fds protocol): a socket unit (or `systemd-socket-activate`) binds the
 * plugin socket and hands it to tsnet as fd 3, naming the receiving process in LISTEN_PID. The socket then outlives
 * tsnet: dockerd's calls queue on it while tsnet (re)starts instead of failing on a missing file.
 */
import { tsnetError } from './errors';

/** The first fd passed (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

/** A listening socket tsnet inherited. */
export interface InheritedSocket {
  fd: number;
  /** LISTEN_FDNAMES' entry for it (the socket unit's FileDescriptorName=, by default its unit name), if given. */
  name?: string;
}

/**
 * The socket passed to process `pid`, or undefined when none is (no LISTEN_FDS, or LISTEN_PID names another process:
 * variables inherited from a parent that was activated). tsnet serves one socket: more than one is refused, as is a
 * malformed count.
 */
export function inheritedSocket(env: NodeJS.ProcessEnv, pid: number): InheritedSocket | undefined {
  const fds = env.LISTEN_FDS;
  if (fds === undefined || env.LISTEN_PID !== String(pid)) return undefined;
  if (!/^\d{1,4}$/.test(fds)) throw tsnetError('TSN_INVALID_OPTION', `socket activation: LISTEN_FDS is not a count of sockets (got ${JSON.stringify(fds.slice(0, 16))})`);
  const count = Number(fds);
  if (count === 0) return undefined;
  if (count > 1) throw tsnetError('TSN_INVALID_OPTION', `socket activation passed ${count} sockets; tsnet serves one (give the socket unit one ListenStream=)`);
  const name = env.LISTEN_FDNAMES?.split(':')[0];
  return name ? { fd: LISTEN_FDS_START, name } : { fd: LISTEN_FDS_START };
}

/**
 * {@link inheritedSocket} of this process; the variables are then removed, as sd_listen_fds(unset_environment)
 * does, so the commands tsnet runs never believe the socket is theirs.
 */
export function takeInheritedSocket(): InheritedSocket | undefined {
  const socket = inheritedSocket(process.env, process.pid);
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_FDNAMES;
  return socket;
}
