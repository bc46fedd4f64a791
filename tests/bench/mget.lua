-- mget.lua -- wrk script: multi-user reads (GET /api/v2/presence?users=a,b,...), each request a set
-- of distinct Zipf-distributed users.
--   wrk ... -s mget.lua URL -- <users> <skew> <ids_per_request>
-- Keys are "u1".."uN", ranks spread over them by a fixed permutation. Requests are pre-generated in
-- init() (wrk shares the 2 cores it measures).
local N, S, K = 10000, 1.0, 100
local reqs, idx = {}, 0
local counter = 0
function setup(thread) counter = counter + 1; thread:set("tid", counter) end
function init(args)
  N = tonumber(args[1] or N); S = tonumber(args[2] or S); K = tonumber(args[3] or K)
  math.randomseed(4321 + (tid or 0))
  local cdf, sum = {}, 0
  for i = 1, N do sum = sum + 1 / (i ^ S); cdf[i] = sum end
  for i = 1, N do cdf[i] = cdf[i] / sum end
  local perm = {}
  for i = 1, N do perm[i] = i end
  for i = N, 2, -1 do local j = math.random(i); perm[i], perm[j] = perm[j], perm[i] end
  math.randomseed(4321 + (tid or 0))
  for r = 1, 2000 do
    local seen, ids = {}, {}
    while #ids < K do
      local u, lo, hi = math.random(), 1, N
      while lo < hi do local mid = math.floor((lo + hi) / 2); if cdf[mid] < u then lo = mid + 1 else hi = mid end end
      if not seen[lo] then seen[lo] = true; ids[#ids + 1] = "u" .. perm[lo] end
    end
    reqs[r] = wrk.format("GET", "/api/v2/presence?users=" .. table.concat(ids, ","))
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
