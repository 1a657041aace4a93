-- The reload lock's holder renews or frees it; nobody else can (a reload that outlived its
-- lock's expiry must not free the lock of the reload that took over).
-- KEYS[1]: the lock. ARGV[1]: 'renew' or 'release'; ARGV[2]: the holder's token;
-- ARGV[3]: for 'renew', the new expiry in milliseconds.
-- Returns 1 when done, 0 when the lock is not the caller's (expired, or taken by another).
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return 0
end
if ARGV[1] == 'renew' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('DEL', KEYS[1])
