-- zipf.lua -- wrk script: requests over Zipf-distributed keys, optionally mixed with writes.
--   wrk ... -s zipf.lua URL -- <users> <skew> <get_prefix> [put_pct] [put_prefix] [auth] [mode]
-- users: key space (keys are "u1".."uN", hashed ranks so hot keys spread over shards)
-- mode "presence": PUT put_prefix..key with a JSON body and an Authorization header;
-- mode "webdis": the write is GET put_prefix..key/<json> (webdis encodes commands in the path).
-- Requests are pre-generated in init(): building each one in request() costs wrk CPU it shares
-- with the gateway it measures on a 2-core machine.
local N, S, PREFIX, PUTPCT, PUTPREFIX, AUTH, MODE = 10000, 1.0, "/api/v2/presence/", 0, "", "", "presence"
local reqs, idx = {}, 0
local counter = 0
function setup(thread) counter = counter + 1; thread:set("tid", counter) end
function init(args)
  N = tonumber(args[1] or N); S = tonumber(args[2] or S); PREFIX = args[3] or PREFIX
  PUTPCT = tonumber(args[4] or 0); PUTPREFIX = args[5] or ""; AUTH = args[6] or ""; MODE = args[7] or "presence"
  math.randomseed(1234 + (tid or 0))
  local cdf, sum = {}, 0
  for i = 1, N do sum = sum + 1 / (i ^ S); cdf[i] = sum end
  for i = 1, N do cdf[i] = cdf[i] / sum end
  -- rank -> key id permutation (deterministic) so the hottest keys are spread out
  local perm = {}
  for i = 1, N do perm[i] = i end
  for i = N, 2, -1 do local j = math.random(i); perm[i], perm[j] = perm[j], perm[i] end
  local body = '{"status":"online","message":"benchmarking","ttl":3600}'
  for r = 1, 20000 do
    local u, lo, hi = math.random(), 1, N
    while lo < hi do local mid = math.floor((lo + hi) / 2); if cdf[mid] < u then lo = mid + 1 else hi = mid end end
    local key = "u" .. perm[lo]
    if math.random(100) <= PUTPCT then
      if MODE == "webdis" then
        reqs[r] = wrk.format("GET", PUTPREFIX .. key .. "/" .. body:gsub('"', '%%22'):gsub(' ', '%%20'):gsub('{', '%%7B'):gsub('}', '%%7D'):gsub(':', '%%3A'):gsub(',', '%%2C'))
      else
        reqs[r] = wrk.format("PUT", PUTPREFIX .. key, {["Authorization"] = "Bearer " .. AUTH, ["Content-Type"] = "application/json"}, body)
      end
    else
      reqs[r] = wrk.format("GET", PREFIX .. key)
    end
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
