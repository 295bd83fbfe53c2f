-- wrk script: random requests on the benchmarked apps.
-- Arguments (after `--`), both optional:
--   1. the fraction of requests sent to /slow instead (default 0);
--   2. the endpoint: `item` (default), primary-key lookups on /item/1..10000,
--      or `list`, pages of 100 rows from a random place: /items?limit=100&after=N.
-- e.g. `wrk ... -s bench.lua http://host:port -- 0.1 list`.
-- At the end it prints one `BENCH_JSON {...}` line that benchmarks/wrk.py parses,
-- which is sturdier than scraping wrk's human-readable report.

local counter = 0
local slow_fraction = 0
local endpoint = "item"

function setup(thread)
  -- Each wrk thread has its own Lua state; give each a distinct random seed.
  counter = counter + 1
  thread:set("thread_id", counter)
end

function init(args)
  slow_fraction = tonumber(args[1] or "0") or 0
  endpoint = args[2] or "item"
  if endpoint ~= "item" and endpoint ~= "list" then
    error("bench.lua: unknown endpoint " .. endpoint)
  end
  math.randomseed(os.time() * 1000 + (thread_id or 0))
  math.random()
  math.random()
end

function request()
  if slow_fraction > 0 and math.random() < slow_fraction then
    return wrk.format("GET", "/slow")
  end
  if endpoint == "list" then
    return wrk.format("GET", "/items?limit=100&after=" .. math.random(0, 9900))
  end
  return wrk.format("GET", "/item/" .. math.random(1, 10000))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "mean_us": %.1f, "max_us": %d, "errors": {"connect": %d, '
      .. '"read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
