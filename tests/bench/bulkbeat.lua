-- bulkbeat.lua -- wrk script: bulk heartbeats, POST /api/v2/presence/batch {"heartbeats":[...]}
-- of K users per request, cycling through N users, with one admin token (a connection-holding
-- backend that heartbeats its users in bulk).
--   wrk ... -s bulkbeat.lua URL -- <admin_token> <K> <N>
local reqs, idx = {}, 0
function init(args)
  local tok, k, n = args[1], tonumber(args[2] or 500), tonumber(args[3] or 20000)
  local r = 0
  for start = 1, n, k do
    local ids = {}
    for i = start, math.min(start + k - 1, n) do ids[#ids + 1] = '"u' .. i .. '"' end
    r = r + 1
    reqs[r] = wrk.format("POST", "/api/v2/presence/batch",
                         {["Authorization"] = "Bearer " .. tok, ["Content-Type"] = "application/json"},
                         '{"heartbeats":[' .. table.concat(ids, ",") .. '],"ttl":60}')
  end
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
