-- Harbour's fenced write: applies a row to its hash only when its version is newer than the one
-- held, then refreshes the key's TTL and appends the change to the kind's stream.
-- KEYS[1] hash, KEYS[2] stream
-- ARGV[1] version, ARGV[2] ttl ms (0: none), ARGV[3] stream MAXLEN (approximate),
-- ARGV[4] deleted ('1' keeps a tombstone: an older replay cannot bring the row back),
-- ARGV[5..] field, value, ...
local held = redis.call('HGET', KEYS[1], 'version')
if held and tonumber(held) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'version', ARGV[1], 'deleted', '1')
else
  redis.call('HSET', KEYS[1], 'version', ARGV[1], unpack(ARGV, 5))
end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'key', KEYS[1], 'version', ARGV[1], 'deleted', ARGV[4], unpack(ARGV, 5))
return 1
