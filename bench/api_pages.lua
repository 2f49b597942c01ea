-- wrk script for bench/api.py: follow keyset pages of records and of the event feed, closed-loop or paced.
--
-- wrk -t2 -c16 -d30s -s bench/api_pages.lua http://127.0.0.1:PORT -- KEY RATE THREADS RECORDS_CURSOR EVENTS_AFTER
--   KEY             an API key with records:read and events:read
--   RATE            0: closed loop (each connection sends its next request when the last one is answered,
--                   which measures saturation); N: paced open loop at N requests/s over all threads, each
--                   thread claiming send slots on a fixed schedule (latency AT that rate)
--   THREADS         the -t given to wrk (each thread takes 1/THREADS of RATE)
--   RECORDS_CURSOR  where the records threads start (an opaque cursor; "" for the first page)
--   EVENTS_AFTER    where the event-feed threads start (an event seq)
-- Even threads page /v1/records/inventory-movements, odd ones /v1/events, 100 records a page, following
-- next_cursor and wrapping to the start at the end. done() prints one JSON line for bench/api.py.
-- A paced send whose slot had passed by more than 5 ms counts as "late": the server could not keep up,
-- and the latency of those requests (measured from the send, as wrk does) understates the wait.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local created = 0

function setup(thread)
  thread:set("id", created)
  created = created + 1
  table.insert(threads, thread)
end

function init(args)
  wrk.headers["X-API-Key"] = args[1]
  local rate = tonumber(args[2]) or 0
  interval = rate > 0 and 1000 * tonumber(args[3]) / rate or 0
  records = id % 2 == 0
  cursor = args[4] or ""
  after = tonumber(args[5]) or 0
  items, late, next_at = 0, 0, nil
end

function delay()
  if interval == 0 then
    return 0
  end
  local t = now_ms()
  if next_at == nil then
    next_at = t
  end
  local slot = next_at
  next_at = next_at + interval
  if slot <= t then
    if t - slot > 5 then
      late = late + 1
    end
    return 0
  end
  return slot - t
end

function request()
  if records then
    return wrk.format("GET", "/v1/records/inventory-movements?limit=100&after=" .. cursor)
  end
  return wrk.format("GET", "/v1/events?limit=100&after=" .. after)
end

local function count(body, needle)
  local n, pos = 0, 1
  while true do
    local found = string.find(body, needle, pos, true)
    if found == nil then
      return n
    end
    n, pos = n + 1, found + #needle
  end
end

function response(status, headers, body)
  if status ~= 200 then
    return
  end
  if records then
    items = items + count(body, '{"id":')
    cursor = string.match(body, '"next_cursor":"([^"]+)"') or ""
  else
    local n = count(body, '{"seq":')
    items = items + n
    after = n == 0 and 0 or tonumber(string.match(body, '"next_cursor":(%d+)'))
  end
end

function done(summary, latency, requests)
  local got, behind = 0, 0
  for _, thread in ipairs(threads) do
    got = got + thread:get("items")
    behind = behind + thread:get("late")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "records": %d, "errors": %d, "socket_errors": %d, "late": %d, ' ..
    '"p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, got, e.status, e.connect + e.read + e.write + e.timeout, behind,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
