// BullMQ side of herd's queue benchmark: N jobs end to end (add + process + complete) with a
// Worker of the given concurrency, on the Redis at REDIS_PORT. Prints one JSON line.
// Producers add one job per call (BULK>1: addBulk of BULK jobs) with PRODUCERS calls in flight,
// while the worker processes;
// the figure is N / (time from the first add to the last completion). Jobs are removed on
// completion (removeOnComplete), like herd's side of the run.
import { Queue, Worker, QueueEvents } from 'bullmq';

const N = Number(process.env.JOBS ?? 20000);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 1);
const PRODUCERS = Number(process.env.PRODUCERS ?? 16);
// Jobs per add call: 1 uses Queue.add, more use Queue.addBulk (one script call per batch).
const BULK = Number(process.env.BULK ?? 1);
const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT ?? 6379) };
const name = `bench-${process.pid}-${CONCURRENCY}`;

const queue = new Queue(name, { connection });
await queue.waitUntilReady();
let done = 0;
let finish;
const allDone = new Promise((resolve) => { finish = resolve; });
const worker = new Worker(name, async () => {}, { connection, concurrency: CONCURRENCY, autorun: true });
worker.on('completed', () => { if (++done === N) finish(); });
await worker.waitUntilReady();

const start = process.hrtime.bigint();
let next = 0;
async function producer() {
  const opts = { removeOnComplete: true, removeOnFail: true };
  while (next < N) {
    if (BULK === 1) {
      const i = next++;
      await queue.add('job', { i }, opts);
      continue;
    }
    const first = next;
    next = Math.min(N, next + BULK);
    const jobs = [];
    for (let i = first; i < next; i++) jobs.push({ name: 'job', data: { i }, opts });
    await queue.addBulk(jobs);
  }
}
const addsDone = Promise.all(Array.from({ length: PRODUCERS }, producer)).then(() => process.hrtime.bigint());
const addedAt = await addsDone;
await allDone;
const end = process.hrtime.bigint();
const secs = Number(end - start) / 1e9;
console.log(JSON.stringify({
  system: 'bullmq', jobs: N, concurrency: CONCURRENCY, producers: PRODUCERS, bulk: BULK,
  seconds: +secs.toFixed(3), jobs_per_s: Math.round(N / secs),
  add_per_s: Math.round(N / (Number(addedAt - start) / 1e9)),
}));
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
process.exit(0);
