-- Append a batch of log entries of one usage stream (SPEC section 6) and index their request
-- ids, atomically: the per-entry work is the appends and the index, the retention and length
-- trims and the EXPIREs run once per call.
-- KEYS[1]: the usage stream (the account's, or the global one for entries without an account)
-- KEYS[2]: that stream's queue of "<entry id> <request id>", newest first, in step with it
-- KEYS[2+i], i = 1..n: the request-id index key of entry i (ARGV[5] .. its request id)
-- KEYS[2+n+s]: the execution streams the entries go to, each once
-- ARGV[1]: max entries per stream   ARGV[2]: MINID cutoff (ms)   ARGV[3]: retention in seconds
-- ARGV[4]: "~" (approximate MAXLEN) or "="   ARGV[5]: the request-id index key prefix
-- ARGV[6]: n, the number of entries   ARGV[7]: refs kept per request id (global)
-- ARGV[8]: entry ids kept per request id in this stream
-- ARGV[8+i]: entry i as JSON   ARGV[8+n+i]: s, its execution stream KEYS[2+n+s], or 0 for none
--
-- A request id's global index is a list of "<usage stream> <entry id>", oldest first, of its
-- last ARGV[7] entries in any stream (the all-accounts search); each usage stream has its own
-- list of its entry ids for the id, "<usage stream>:rid:<request id>", of the last ARGV[8]:
-- a client's id may come back (a retry, another account's client, even on purpose), and an
-- account's search must still find its own entries whatever other accounts send.
-- The index must not outlive what it points to: every entry that leaves the usage stream
-- (age or length, an entry of this very call included) takes its reference along, so the
-- index is bounded by the retained entries and not by the traffic of the last 21 days.

local usage, queue = KEYS[1], KEYS[2]
local maxlen, cutoff, ttl, mode, prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local n, keep, keep_scoped = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local scoped_prefix = usage .. ':rid:'
local streams = 3 + n
local rid_from = #prefix + 1

local function forget(count)
  if count <= 0 then return end
  local gone = redis.call('RPOP', queue, count)
  if not gone then return end
  for _, item in ipairs(gone) do
    local sep = string.find(item, ' ', 1, true)
    if sep then
      local rid, entry = string.sub(item, sep + 1), string.sub(item, 1, sep - 1)
      local key = prefix .. rid
      if redis.call('TYPE', key).ok == 'list' then
        redis.call('LREM', key, 1, usage .. ' ' .. entry)
      end
      redis.call('LREM', scoped_prefix .. rid, 1, entry)
    end
  end
end

local function push(key, value, kept)
  redis.call('RPUSH', key, value)
  redis.call('LTRIM', key, -kept, -1)
  -- The longest retention among its streams (a sandbox account's 7 days must not cut short
  -- another account's 21).
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end

local function index(key, ref)
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'list' and kind ~= 'none' then
    -- An index written before it was a list: one reference, kept as the oldest.
    local old = redis.call('GET', key)
    redis.call('DEL', key)
    if old then redis.call('RPUSH', key, old) end
  end
  push(key, ref, keep)
end

forget(redis.call('XTRIM', usage, 'MINID', cutoff))
for s = streams, #KEYS do
  redis.call('XTRIM', KEYS[s], 'MINID', cutoff)
end
for i = 1, n do
  local body, key = ARGV[8 + i], KEYS[2 + i]
  local rid = string.sub(key, rid_from)
  local id = redis.call('XADD', usage, '*', 'j', body)
  redis.call('LPUSH', queue, id .. ' ' .. rid)
  index(key, usage .. ' ' .. id)
  push(scoped_prefix .. rid, id, keep_scoped)
  local s = tonumber(ARGV[8 + n + i])
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
