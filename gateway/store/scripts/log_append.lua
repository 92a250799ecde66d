-- Append one log entry (SPEC section 6) and index its request id, atomically.
-- KEYS[1]: the usage stream (the account's, or the global one for entries without an account)
-- KEYS[2]: the request-id index key
-- KEYS[3]: optional, the (account, integration) execution stream
-- ARGV[1]: the entry as JSON   ARGV[2]: max entries per stream   ARGV[3]: MINID cutoff (ms)
-- ARGV[4]: retention in seconds   ARGV[5]: "~" (approximate MAXLEN) or "="
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[5], ARGV[2], '*', 'j', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], KEYS[1] .. ' ' .. id, 'EX', ARGV[4])
if #KEYS >= 3 then
  redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[5], ARGV[2], '*', 'j', ARGV[1])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
return id
