-- Append a batch of log entries of one usage stream (SPEC section 6) and index their request
-- ids, atomically: the per-entry work is the appends and the index, the retention and length
-- trims and the EXPIREs run once per call.
-- KEYS[1]: the usage stream (the account's, or the global one for entries without an account)
-- KEYS[2]: that stream's queue of "<entry id> <request id>", newest first, in step with it
-- KEYS[2+i], i = 1..n: the request-id index key of entry i (ARGV[5] .. its request id)
-- KEYS[2+n+s]: the execution streams the entries go to, each once
-- ARGV[1]: max entries per stream   ARGV[2]: MINID cutoff (ms)   ARGV[3]: retention in seconds
-- ARGV[4]: "~" (approximate MAXLEN) or "="   ARGV[5]: the request-id index key prefix
-- ARGV[6]: n, the number of entries
-- ARGV[6+i]: entry i as JSON   ARGV[6+n+i]: s, its execution stream KEYS[2+n+s], or 0 for none
-- ARGV[7+2n] and on: entries whose request id a later entry of the same write reuses; they
-- leave the index to that one (it points at the newest entry, whichever call writes it)
--
-- The index must not outlive what it points to: every entry that leaves the usage stream
-- (age or length, an entry of this very call included) takes its index key along, so the
-- index is bounded by the retained entries and not by the traffic of the last 21 days.

local usage, queue = KEYS[1], KEYS[2]
local maxlen, cutoff, ttl, mode, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n = tonumber(ARGV[6])
local streams = 3 + n
local rid_from = #prefix + 1

local function forget(count)
  if count <= 0 then return end
  local gone = redis.call('RPOP', queue, count)
  if not gone then return end
  for _, item in ipairs(gone) do
    local sep = string.find(item, ' ', 1, true)
    if sep then
      local key = prefix .. string.sub(item, sep + 1)
      -- A request id sent twice points at its newest entry: leave that one alone.
      if redis.call('GET', key) == usage .. ' ' .. string.sub(item, 1, sep - 1) then
        redis.call('DEL', key)
      end
    end
  end
end

local unindexed = {}
for a = 7 + 2 * n, #ARGV do
  unindexed[tonumber(ARGV[a])] = true
end

forget(redis.call('XTRIM', usage, 'MINID', cutoff))
for s = streams, #KEYS do
  redis.call('XTRIM', KEYS[s], 'MINID', cutoff)
end
for i = 1, n do
  local body, index = ARGV[6 + i], KEYS[2 + i]
  local id = redis.call('XADD', usage, '*', 'j', body)
  redis.call('LPUSH', queue, id .. ' ' .. string.sub(index, rid_from))
  if not unindexed[i] then
    redis.call('SET', index, usage .. ' ' .. id, 'EX', ttl)
  end
  local s = tonumber(ARGV[6 + n + i])
  if s > 0 then
    redis.call('XADD', KEYS[2 + n + s], '*', 'j', body)
  end
end
forget(redis.call('XTRIM', usage, 'MAXLEN', mode, maxlen))
redis.call('EXPIRE', usage, ttl)
redis.call('EXPIRE', queue, ttl)
for s = streams, #KEYS do
  redis.call('XTRIM', KEYS[s], 'MAXLEN', mode, maxlen)
  redis.call('EXPIRE', KEYS[s], ttl)
end
return n
