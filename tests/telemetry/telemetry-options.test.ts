import t from 'tap';
import { DEFAULT_TRACE_FILE, telemetryOptions } from '../../telemetry/telemetry-options.js';

t.test('defaults: the OTLP/JSON lines file, everything sampled', async (t) => {
  const o = telemetryOptions({});
  t.match(o, { enabled: true, target: 'file', file: DEFAULT_TRACE_FILE, protocol: 'http/protobuf', sampleRatio: 1, maxQueueSize: 2048, maxExportBatchSize: 512, timeoutMs: 10_000, compression: 'none' });
  t.equal(o.endpoint, undefined);
  t.ok(Object.isFrozen(o), 'frozen');
});

t.test('the standard variables, and flags over them', async (t) => {
  const cases: [Record<string, string>, Record<string, string>, Record<string, unknown>][] = [
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, {}, { target: 'otlp', endpoint: 'http://c:4318/v1/traces' }],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' }, {}, { endpoint: 'http://c:4318/v1/traces' }],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/custom' }, {}, { endpoint: 'http://c:4318/custom' }],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, {}, { protocol: 'grpc', endpoint: 'http://c:4317' }],
    [{ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' }, {}, { protocol: 'http/json' }],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, { otlpEndpoint: 'http://d:4318' }, { endpoint: 'http://d:4318/v1/traces' }],
    [{ OTEL_EXPORTER_OTLP_HEADERS: 'a=1, B=x%20y', OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'c=3' }, {}, { headers: { a: '1', b: 'x y', c: '3' } }],
    [{ OTEL_EXPORTER_OTLP_TIMEOUT: '2500', OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip' }, {}, { timeoutMs: 2500, compression: 'gzip' }],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' }, {}, { sampleRatio: 0.25 }],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_always_off' }, {}, { sampleRatio: 0 }],
    [{ OTEL_TRACES_SAMPLER: 'always_on' }, { sampleRatio: '0.5' }, { sampleRatio: 0.5 }],
    [{ OTEL_BSP_MAX_QUEUE_SIZE: '100', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '500' }, {}, { maxQueueSize: 100, maxExportBatchSize: 100 }],
    [{ OTEL_SDK_DISABLED: 'true' }, {}, { enabled: false }],
    [{ OTEL_SDK_DISABLED: 'true' }, { tracing: 'on' }, { enabled: true }],
    [{}, { tracing: 'off' }, { enabled: false }],
    [{ SOCKMESH_TRACES_FILE: '/tmp/x.jsonl' }, {}, { file: '/tmp/x.jsonl' }],
    [{ SOCKMESH_TRACES_FILE: '/tmp/x.jsonl' }, { traceFile: '/tmp/y.jsonl' }, { file: '/tmp/y.jsonl' }],
  ];
  for (const [env, flags, want] of cases) t.match(telemetryOptions(env, flags), want, JSON.stringify([env, flags]));
});

t.test('bad values name the variable or flag', async (t) => {
  const cases: [Record<string, string>, Record<string, string>, RegExp][] = [
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }, {}, /OTEL_EXPORTER_OTLP_ENDPOINT "collector:4318": the scheme must be http or https/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url' }, {}, /OTEL_EXPORTER_OTLP_ENDPOINT "not a url": not a URL/],
    [{ OTEL_EXPORTER_OTLP_PROTOCOL: 'thrift' }, {}, /OTEL_EXPORTER_OTLP_PROTOCOL "thrift": not an OTLP protocol/],
    [{ OTEL_EXPORTER_OTLP_HEADERS: 'novalue' }, {}, /OTEL_EXPORTER_OTLP_HEADERS: "novalue" is not key=value/],
    [{ OTEL_EXPORTER_OTLP_TIMEOUT: '-1' }, {}, /OTEL_EXPORTER_OTLP_TIMEOUT="-1": must be a positive number/],
    [{ OTEL_TRACES_SAMPLER: 'jaeger_remote' }, {}, /OTEL_TRACES_SAMPLER="jaeger_remote": sockmesh samples parent-based/],
    [{ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1.5' }, {}, /OTEL_TRACES_SAMPLER_ARG="1.5": must be a number from 0 to 1/],
    [{ OTEL_BSP_MAX_QUEUE_SIZE: '0' }, {}, /OTEL_BSP_MAX_QUEUE_SIZE="0": must be a positive integer/],
    [{ OTEL_EXPORTER_OTLP_COMPRESSION: 'zstd' }, {}, /OTEL_EXPORTER_OTLP_COMPRESSION="zstd": must be gzip or none/],
    [{}, { sampleRatio: 'half' }, /--sample-ratio "half"/],
    [{}, { tracing: 'yes' }, /--tracing "yes": must be on or off/],
  ];
  for (const [env, flags, re] of cases) t.throws(() => telemetryOptions(env, flags), { code: 'SOCKMESH_INVALID_ARGUMENT', message: re }, re.source);
});
