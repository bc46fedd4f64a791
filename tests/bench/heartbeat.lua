-- heartbeat.lua -- wrk script: every request is a heartbeat of one of N users, each with its own
-- token, users taken round-robin from a file of "uid token" lines (tests/tools/mktokens.c).
--   wrk ... -s heartbeat.lua URL -- <tokens_file>
local reqs, idx = {}, 0
local counter = 0
function setup(thread) counter = counter + 1; thread:set("tid", counter) end
function init(args)
  local n = 0
  for line in io.lines(args[1]) do
    local uid, tok = line:match("^(%S+) (%S+)$")
    if uid then
      n = n + 1
      reqs[n] = wrk.format("POST", "/api/v2/presence/" .. uid .. "/heartbeat",
                           {["Authorization"] = "Bearer " .. tok}, "")
    end
  end
  idx = ((tid or 1) - 1) * math.floor(n / 4)
end
function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end
function done(summary, latency, requests)
  io.write(string.format("RESULT requests %d seconds %.2f rps %.0f p50_ms %.3f p99_ms %.3f errors %d non2xx %d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
