import { log } from '../src/log';

// Quiet by default; TEST_LOG=1 shows tsnet's JSON logs while debugging a test.
log.silent = !process.env.TEST_LOG;
