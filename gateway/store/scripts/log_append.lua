-- Append one log entry (SPEC section 6) and index its request id, atomically.
-- KEYS[1]: the usage stream (the account's, or the global one for entries without an account)
-- KEYS[2]: that stream's queue of "<entry id> <request id>", newest first, in step with it
-- KEYS[3]: the request-id index key of this entry
-- KEYS[4]: optional, the (account, integration) execution stream
-- ARGV[1]: the entry as JSON   ARGV[2]: max entries per stream   ARGV[3]: MINID cutoff (ms)
-- ARGV[4]: retention in seconds   ARGV[5]: "~" (approximate MAXLEN) or "="
-- ARGV[6]: the request-id index key prefix   ARGV[7]: the request id
--
-- The index must not outlive what it points to: every entry that leaves the usage stream
-- (age or length) takes its index key along, so the index is bounded by the retained entries
-- and not by the traffic of the last 21 days.

local maxlen = tonumber(ARGV[2])

local function forget(n)
  if n <= 0 then return end
  local gone = redis.call('RPOP', KEYS[2], n)
  if not gone then return end
  for _, item in ipairs(gone) do
    local sep = string.find(item, ' ', 1, true)
    if sep then
      local key = ARGV[6] .. string.sub(item, sep + 1)
      -- A request id sent twice points at its newest entry: leave that one alone.
      if redis.call('GET', key) == KEYS[1] .. ' ' .. string.sub(item, 1, sep - 1) then
        redis.call('DEL', key)
      end
    end
  end
end

forget(redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3]))
forget(redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[5], maxlen - 1))
local id = redis.call('XADD', KEYS[1], '*', 'j', ARGV[1])
redis.call('LPUSH', KEYS[2], id .. ' ' .. ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], KEYS[1] .. ' ' .. id, 'EX', ARGV[4])
if #KEYS >= 4 then
  redis.call('XTRIM', KEYS[4], 'MINID', ARGV[3])
  redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[5], ARGV[2], '*', 'j', ARGV[1])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
end
return id
