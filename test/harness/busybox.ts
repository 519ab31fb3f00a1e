/**
 * The one container image e2e tests use, built locally from busybox-static (there is no registry to pull from).
 */
import fs from 'node:fs';
import path from 'node:path';
import { type Docker, TEMP_PREFIX } from './dockerd';
import { runOk } from './exec';

/** Image name for `docker run`. Its default command is `sh` and PATH is `/bin`. */
export const BUSYBOX_IMAGE = 'tsnet-busybox:latest';

const BUSYBOX_BINARY = '/bin/busybox';

/** True if the ELF file has no PT_INTERP program header, i.e. needs no dynamic loader inside the container. */
export function isStaticElf(file: string): boolean {
  const b = fs.readFileSync(file);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) {
    throw new Error(`${file} is not a little-endian 64-bit ELF file`);
  }
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) {
    if (b.readUInt32LE(phoff + i * phentsize) === PT_INTERP) return false;
  }
  return true;
}

/**
 * Fills `dir` with a busybox root filesystem: `bin/busybox`, a symlink per applet, `sbin`/`usr/bin`/`usr/sbin`
 * pointing at `bin`, root-only passwd/group, and empty dirs containers expect.
 */
export async function buildBusyboxRootfs(dir: string): Promise<void> {
  if (!isStaticElf(BUSYBOX_BINARY)) throw new Error(`${BUSYBOX_BINARY} is dynamically linked; install busybox-static`);
  const bin = path.join(dir, 'bin');
  for (const d of ['bin', 'etc', 'tmp', 'root', 'usr', 'var/www', 'proc', 'sys', 'dev']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.copyFileSync(BUSYBOX_BINARY, path.join(bin, 'busybox'));
  fs.chmodSync(path.join(bin, 'busybox'), 0o755);
  const { stdout } = await runOk(BUSYBOX_BINARY, ['--list']);
  for (const applet of stdout.split('\n').map((s) => s.trim())) {
    if (applet === '' || applet === 'busybox') continue;
    fs.symlinkSync('busybox', path.join(bin, applet));
  }
  fs.symlinkSync('bin', path.join(dir, 'sbin'));
  fs.symlinkSync('../bin', path.join(dir, 'usr', 'bin'));
  fs.symlinkSync('../bin', path.join(dir, 'usr', 'sbin'));
  fs.chmodSync(path.join(dir, 'tmp'), 0o1777);
  fs.writeFileSync(path.join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(dir, 'etc', 'group'), 'root:x:0:\n');
}

/** Imports {@link BUSYBOX_IMAGE} into the daemon unless it already has it. */
export async function ensureBusyboxImage(docker: Docker): Promise<void> {
  if ((await docker.dockerTry(['image', 'inspect', BUSYBOX_IMAGE])).code === 0) return;
  const rootfs = fs.mkdtempSync(`${TEMP_PREFIX}rootfs-`);
  try {
    await buildBusyboxRootfs(rootfs);
    await docker.dockerPiped({ cmd: 'tar', args: ['-C', rootfs, '--numeric-owner', '--owner=0', '--group=0', '-c', '.'] }, [
      'import',
      '--change',
      'ENV PATH=/bin',
      '--change',
      'CMD ["sh"]',
      '-',
      BUSYBOX_IMAGE,
    ]);
  } finally {
    fs.rmSync(rootfs, { recursive: true, force: true });
  }
}
