import { EventEmitter } from 'node:events';
import type { MonitorProcess } from '../../src/kernel/monitor';

/** A stand-in for a monitor child (`ip monitor`, `nft monitor`): the test writes its output and makes it exit. */
export class StubMonitor extends EventEmitter implements MonitorProcess {
  readonly stdout = new EventEmitter();
  killed = false;
  write(text: string): void {
    this.stdout.emit('data', Buffer.from(text));
  }
  kill(): void {
    this.killed = true;
  }
}
