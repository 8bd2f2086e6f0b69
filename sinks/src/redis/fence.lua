-- Harbour's fenced writes, a batch of rows per call: each row is applied to its hash only when its
-- version is newer than the one held, or equal to it with other content (the last write of a
-- version wins, as in ClickHouse's ReplacingMergeTree: a restart can rebuild a row at the version
-- the stores hold with other values, e.g. risk under changed settings); then the key's TTL is
-- refreshed and the change appended to the kind's stream. Returns the number of rows applied.
--
-- ARGV[1]: stream MAXLEN (approximate); ARGV[2]: '1' to also PUBLISH each applied change on the
-- kind's stream name as channel (message: "<key> <version>"); ARGV[3]: the epoch marker read in
-- the same transaction (0 when absent): a row for a key that no longer exists is applied only
-- when newer than it (a key missing at or below the marker was written and has expired by its
-- TTL since: a replay must not bring it back nor stream it again); then, per row:
--   key, stream, version, ttl ms (0: none), deleted ('1' keeps a tombstone so an older replay
--   cannot bring the row back), n, then n field/value pairs.
-- (Keys are passed as arguments: Harbour's Redis is a single instance, not a cluster.)
local maxlen = ARGV[1]
local publish = ARGV[2] == '1'
local marker = tonumber(ARGV[3])
local i = 4
local applied = 0

-- Whether the row at ARGV[first..last] (field/value pairs; `deleted` '1' for a tombstone) differs
-- from what `key` holds.
local function differs(key, deleted, first, last)
  local tombstone = redis.call('HGET', key, 'deleted') == '1'
  if deleted == '1' or tombstone then
    return (deleted == '1') ~= tombstone
  end
  local names = {}
  for j = first, last, 2 do
    names[#names + 1] = ARGV[j]
  end
  if #names == 0 then
    return false
  end
  local held = redis.call('HMGET', key, unpack(names))
  local k = 1
  for j = first + 1, last, 2 do
    if held[k] ~= ARGV[j] then
      return true
    end
    k = k + 1
  end
  return false
end
while i <= #ARGV do
  local key, stream, version, ttl, deleted = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local n = tonumber(ARGV[i + 5])
  local first, last = i + 6, i + 5 + 2 * n
  i = last + 1
  local held = redis.call('HGET', key, 'version')
  local apply
  if held then
    local h, v = tonumber(held), tonumber(version)
    apply = h < v or (h == v and differs(key, deleted, first, last))
  else
    apply = tonumber(version) > marker
  end
  if apply then
    if deleted == '1' then
      redis.call('DEL', key)
      redis.call('HSET', key, 'version', version, 'deleted', '1')
    else
      -- A kind's rows always carry the same fields: HSET overwrites them all.
      redis.call('HSET', key, 'version', version, unpack(ARGV, first, last))
      redis.call('HDEL', key, 'deleted')
    end
    if tonumber(ttl) > 0 then
      redis.call('PEXPIRE', key, ttl)
    else
      -- No expiry: also none left from a TTL configured before (HSET keeps a key's TTL).
      redis.call('PERSIST', key)
    end
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'key', key, 'version', version, 'deleted', deleted,
      unpack(ARGV, first, last))
    if publish then
      redis.call('PUBLISH', stream, key .. ' ' .. version)
    end
    applied = applied + 1
  end
end
return applied
