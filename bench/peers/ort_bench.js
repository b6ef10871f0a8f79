#!/usr/bin/env node
// ONNX Runtime (onnxruntime-node, CPU) timing of a peers.py model.onnx.
//
//   node bench/peers/ort_bench.js --model DIR/<config>/model.onnx \
//       [--batches 1,8,64,256,1024] [--threads 2] [--min_time 1.0] [--repeats 3]
//
// prints one JSON object: {"system":"onnxruntime","version":...,"results":
// [{"batch","latency_us","candidates_per_s"}, ...], ...}. Each batch is warmed
// up, then timed 3 times for >= min_time seconds of back-to-back
// `await session.run` calls (as a node server would call it); the best mean
// is kept. If overhead.onnx (a trivial model with the same input, written by
// peers.py prepare) lies beside the model, the mean time of one batch-1 call
// of it is reported as per_call_overhead_us: the cost of a run call itself.
//
//   node bench/peers/ort_bench.js --model M --run V.f32 --rows N --out S.f32
//       [--alone]
//
// runs the model once on N rows of little-endian float32 V and writes the
// float32 scores (peers.py uses it to verify the export); with --alone, N
// calls of one row each.
'use strict';

const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const args = {
    batches: '1,8,64,256,1024',
    threads: '2',
    min_time: '1.0',
    repeats: '3',
    warmup: '0.2',
  };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z_]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) throw new Error(`unexpected argument ${argv[i]}`);
    if (m[1] === 'alone') {  // the one flag without a value
      args.alone = true;
      continue;
    }
    args[m[1]] = m[2] !== undefined ? m[2] : argv[++i];
  }
  if (!args.model) throw new Error('--model is required');
  return args;
}

async function createSession(modelPath, threads) {
  return ort.InferenceSession.create(modelPath, {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
}

function inputWidth(session) {
  const meta = session.inputMetadata;
  const input = Array.isArray(meta) ? meta.find((m) => m.name === 'v') : null;
  if (input && input.shape && typeof input.shape[1] === 'number') {
    return input.shape[1];
  }
  return null;
}

// Standard normal values from a fixed-seed generator (mulberry32 + Box-Muller).
function randomNormal(count, seed) {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const u = 1 - uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    const phi = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(phi);
    if (i + 1 < count) out[i + 1] = r * Math.sin(phi);
  }
  return out;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

// Mean seconds per call over >= minTime seconds of back-to-back calls.
async function timeCalls(session, feeds, minTime) {
  let calls = 0;
  const start = now();
  for (;;) {
    await session.run(feeds);
    calls++;
    const elapsed = now() - start;
    if (elapsed >= minTime) return elapsed / calls;
  }
}

async function runOnce(args) {
  const session = await createSession(args.model, Number(args.threads));
  const rows = Number(args.rows);
  const bytes = fs.readFileSync(args.run);
  const values = new Float32Array(bytes.buffer, bytes.byteOffset,
                                  bytes.length / 4);
  const d = values.length / rows;
  // --alone: each row in a call of its own (a batch of one), to measure how
  // much a row's score depends on the rest of its batch.
  const calls = args.alone ? rows : 1;
  const perCall = rows / calls;
  const parts = [];
  for (let c = 0; c < calls; c++) {
    const slice = values.slice(c * perCall * d, (c + 1) * perCall * d);
    const out = await session.run(
        {v: new ort.Tensor('float32', slice, [perCall, d])});
    parts.push(Buffer.from(out.scores.data.buffer, out.scores.data.byteOffset,
                           out.scores.data.byteLength));
  }
  fs.writeFileSync(args.out, Buffer.concat(parts));
}

async function bench(args) {
  const threads = Number(args.threads);
  const minTime = Number(args.min_time);
  const repeats = Number(args.repeats);
  const warmup = Number(args.warmup);
  const batches = args.batches.split(',').filter((x) => x).map(Number);
  const session = await createSession(args.model, threads);
  let d = inputWidth(session);
  const metaPath = path.join(path.dirname(args.model), 'meta.json');
  let meta = null;
  if (fs.existsSync(metaPath)) {
    meta = JSON.parse(fs.readFileSync(metaPath, 'utf8'));
    d = d || meta.instance_width;
  }
  if (!d) throw new Error('cannot tell the input width: no meta.json');

  const results = [];
  for (const batch of batches) {
    const feeds = {
      v: new ort.Tensor('float32', randomNormal(batch * d, 1000 + batch),
                        [batch, d]),
    };
    await timeCalls(session, feeds, warmup);
    let best = Infinity;
    for (let r = 0; r < repeats; r++) {
      best = Math.min(best, await timeCalls(session, feeds, minTime));
    }
    results.push({
      batch,
      latency_us: Math.round(best * 1e8) / 100,
      candidates_per_s: Math.round(batch / best * 10) / 10,
    });
  }

  const report = {
    system: 'onnxruntime',
    version: ort.env.versions ? ort.env.versions.node : null,
    backend: 'cpu',
    config: meta ? meta.config : path.basename(path.dirname(args.model)),
    threads,
    min_time: minTime,
    repeats,
    session_options: {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
    },
    flops_per_candidate: meta ? meta.flops_per_candidate : null,
    results,
  };

  const overheadPath = path.join(path.dirname(args.model), 'overhead.onnx');
  if (fs.existsSync(overheadPath)) {
    const trivial = await createSession(overheadPath, threads);
    const feeds = {v: new ort.Tensor('float32', randomNormal(d, 7), [1, d])};
    await timeCalls(trivial, feeds, warmup);
    let best = Infinity;
    for (let r = 0; r < repeats; r++) {
      best = Math.min(best, await timeCalls(trivial, feeds,
                                            Math.min(minTime, 0.5)));
    }
    report.per_call_overhead_us = Math.round(best * 1e8) / 100;
    report.per_call_overhead_note =
        'mean batch-1 await session.run of overhead.onnx (sigmoid of a ' +
        'slice of v): the cost of a call itself, included in latency_us';
  }
  process.stdout.write(JSON.stringify(report) + '\n');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.run) {
    await runOnce(args);
  } else {
    await bench(args);
  }
}

main().catch((err) => {
  process.stderr.write(`ort_bench: ${err.stack || err}\n`);
  process.exit(1);
});
