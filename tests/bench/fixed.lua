-- fixed.lua -- wrk script: one path, over and over (the bare-h2o yardstick's /json), with the RESULT
-- line zipf.lua prints.   wrk ... -s fixed.lua URL -- <path>
local req
function init(args) req = wrk.format("GET", args[1] or "/") end
function request() return req end
function done(summary, latency, requests)
  io.write(string.format("RESULT requests %d seconds %.2f rps %.0f p50_ms %.3f p99_ms %.3f errors %d non2xx %d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
