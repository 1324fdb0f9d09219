//! The Lua scripts behind Redis's conditional and multi-key calls (each runs atomically).
//!
//! Values are stored as `"\0"` + 8-byte big-endian version + payload, so one GET returns both and
//! a counter (a plain integer string, never starting with a NUL byte) is told apart from a value.
//! Multi-key scripts receive keys that share one slot (the caller checks on a cluster).
//! Redis does not undo a script's writes when it fails half-way, so every script makes all the
//! checks that can fail (types, expectations) before its first write.

use std::sync::LazyLock;

use redis::Script;

/// Helpers prepended to scripts that read or write versioned values.
const PRELUDE: &str = r"
local function ver(s)
  if string.byte(s, 1) ~= 0 or #s < 9 then return nil end
  local v = 0
  for i = 2, 9 do v = v * 256 + string.byte(s, i) end
  return v
end
local function enc(v, payload)
  local lo = v % 4294967296
  local hi = (v - lo) / 4294967296
  local f = math.floor
  return '\0' .. string.char(f(hi / 16777216) % 256, f(hi / 65536) % 256, f(hi / 256) % 256,
    hi % 256, f(lo / 16777216) % 256, f(lo / 65536) % 256, f(lo / 256) % 256, lo % 256) .. payload
end
local function wrongtype()
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
";

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// KEYS[1]; ARGV mode (any|absent|version), expected version, payload, ttl ms (0: none).
/// Returns {1, new version} or {0, current version or -1}.
pub(super) static PUT: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local cur = redis.call('GET', KEYS[1])
local v = nil
if cur then
  v = ver(cur)
  if not v then return wrongtype() end
end
local mode = ARGV[1]
if (mode == 'absent' and v) or (mode == 'version' and v ~= tonumber(ARGV[2])) then
  return {0, v or -1}
end
local nv = (v or 0) + 1
if ARGV[4] ~= '0' then
  redis.call('SET', KEYS[1], enc(nv, ARGV[3]), 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], enc(nv, ARGV[3]))
end
return {1, nv}
",
    )
});

/// KEYS[1]; ARGV expected version. Deletes only that version; 1 when deleted.
pub(super) static DELETE_VERSION: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local v = ver(cur)
if not v then return wrongtype() end
if v ~= tonumber(ARGV[1]) then return 0 end
return redis.call('DEL', KEYS[1])
",
    )
});

/// KEYS[1]; ARGV expected version, ttl ms. Sets the TTL only on that version; 1 when set.
pub(super) static TOUCH_VERSION: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local v = ver(cur)
if not v then return wrongtype() end
if v ~= tonumber(ARGV[1]) then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
",
    )
});

/// KEYS[1]; ARGV by, ttl ms (0: keep the current TTL). The new value.
pub(super) static INCR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
",
    )
});

/// KEYS lock, fence; ARGV payload, ttl ms. The fence, or nil when the lock is held. The lock's
/// version is its fence (unique per acquisition, see `Backend::acquire`). Held with this very
/// payload: the holder's fence (the cluster client re-sends a script whose reply was lost).
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('TYPE', KEYS[1]).ok == 'string' then
    local cur = redis.call('GET', KEYS[1])
    local v = ver(cur)
    if v and string.sub(cur, 10) == ARGV[1] then return v end
  end
  return false
end
local f = redis.call('GET', KEYS[2])
if f and not tonumber(f) then return wrongtype() end
local n = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], enc(n, ARGV[1]), 'PX', ARGV[2])
return n
",
    )
});

/// KEYS src, dst; ARGV max score, count, dst score. Flat [member, old score, ...].
pub(super) static ZMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- Redis does not roll a script back: check dst's type before the first ZREM, or a member
-- could leave src and never reach dst.
local dt = redis.call('TYPE', KEYS[2]).ok
if dt ~= 'zset' and dt ~= 'none' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
local m = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #m, 2 do
  redis.call('ZREM', KEYS[1], m[i])
  redis.call('ZADD', KEYS[2], ARGV[3], m[i])
end
return m
",
    )
});

/// KEYS[1]; ARGV emission interval µs, burst tolerance µs. {1, delay µs} or {0, retry after µs}.
/// The same step as `args::gcra_step`, at the server's clock, the TAT kept as an integer string.
pub(super) static GCRA: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = redis.call('GET', KEYS[1])
if tat then
  tat = tonumber(tat)
  if not tat then return wrongtype() end
else
  tat = now
end
if tat < now then tat = now end
local ahead = tat - now
if ahead > tau then return {0, ahead - tau} end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.floor((new - now) / 1000) + 1)
return {1, ahead}
",
    )
});

/// A transaction. KEYS: every key it names, its checks' first, then its ops', in order.
/// ARGV: the number of checks; per check its mode (any|absent|version) and version; then per
/// op its kind and arguments: `put` ttl ms (0: none) and payload, `del`, `zadd` n and n
/// score/member pairs, `zrem` n and n members. Every check and every key's type is looked at
/// before the first write (Redis keeps a failed script's writes). Returns {1, 0, 0} when
/// applied, {0, check (1-based), current version or -1} on a failed check.
pub(super) static TXN: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local ki, ai = 1, 2
for c = 1, tonumber(ARGV[1]) do
  local cur = redis.call('GET', KEYS[ki])
  local v = nil
  if cur then
    v = ver(cur)
    if not v then return wrongtype() end
  end
  local mode = ARGV[ai]
  if (mode == 'absent' and v) or (mode == 'version' and v ~= tonumber(ARGV[ai + 1])) then
    return {0, c, v or -1}
  end
  ki, ai = ki + 1, ai + 2
end
local k0, a0 = ki, ai
while ai <= #ARGV do
  local kind = ARGV[ai]
  if kind == 'put' then
    local cur = redis.call('GET', KEYS[ki])
    if cur and not ver(cur) then return wrongtype() end
    ai = ai + 3
  elseif kind == 'del' then
    ai = ai + 1
  else
    local t = redis.call('TYPE', KEYS[ki]).ok
    if t ~= 'zset' and t ~= 'none' then return wrongtype() end
    local n = tonumber(ARGV[ai + 1])
    if kind == 'zadd' then ai = ai + 2 + 2 * n else ai = ai + 2 + n end
  end
  ki = ki + 1
end
ki, ai = k0, a0
while ai <= #ARGV do
  local kind, key = ARGV[ai], KEYS[ki]
  if kind == 'put' then
    local cur = redis.call('GET', key)
    local nv = 1
    if cur then nv = ver(cur) + 1 end
    if ARGV[ai + 1] ~= '0' then
      redis.call('SET', key, enc(nv, ARGV[ai + 2]), 'PX', ARGV[ai + 1])
    else
      redis.call('SET', key, enc(nv, ARGV[ai + 2]))
    end
    ai = ai + 3
  elseif kind == 'del' then
    redis.call('DEL', key)
    ai = ai + 1
  elseif kind == 'zadd' then
    local n = tonumber(ARGV[ai + 1])
    local i = ai + 2
    while i < ai + 2 + 2 * n do
      local last = math.min(i + 199, ai + 1 + 2 * n)
      redis.call('ZADD', key, unpack(ARGV, i, last))
      i = last + 1
    end
    ai = ai + 2 + 2 * n
  else
    local n = tonumber(ARGV[ai + 1])
    local i = ai + 2
    while i < ai + 2 + n do
      local last = math.min(i + 199, ai + 1 + n)
      redis.call('ZREM', key, unpack(ARGV, i, last))
      i = last + 1
    end
    ai = ai + 2 + n
  end
  ki = ki + 1
end
return {1, 0, 0}
",
    )
});

/// A queue step (`crate::queue`): adds, an ack, then the lease of waiting jobs. KEYS: waiting,
/// active, completed, paused, delayed, seq, and the acked job's record when there is an ack.
/// ARGV: the records' key prefix; `1`/`0` (an ack or not), its id, token, time ms and result;
/// the number of jobs to lease, their deadline ms and one token each; then the number of adds
/// and per add: its id (empty: the seq), `w` rank, `l` (lifo) or `d`, due ms, the header's fields before
/// seq, those after, the body. Returns {flat [id, seq, 1|0] per add, ack outcome (none,
/// completed, deleted, missing, lease, legacy), its detail (keep, or the state), flat [id,
/// attempt, token, body] per leased job, members moved but not leased, 1 when paused}.
/// Header fields: 1 state, 2 generation, 3 seq, 4 due, 5 attempt, 6 stalled, 7 lease until,
/// 8 finished, 9 keep (`Keep`'s field), 10 token. The record keys of the added and leased jobs are not in KEYS;
/// they share the queue's hash tag, so they are in its slot.
pub(super) static QUEUE_STEP: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local function hdr(p)
  local nl = string.find(p, '\n', 4, true)
  if not nl or string.sub(p, 1, 3) ~= 'J1 ' then return nil end
  -- As `decode_job`: ten fields, one space apart, each of its form; a result without newline.
  -- One anchored match (a split and a check per field cost four times as much in Redis).
  local s, g, q, d, a, st, l, f, k, t = string.match(string.sub(p, 4, nl - 1),
    '^([wacf]) (%d+) (%d+) (%-?%d+) (%d+) (%d+) (%-?%d+) ([^ ]+) ([^ ]+) ([^ ]+)$')
  if not s then return nil end
  if f ~= '-' and not string.match(f, '^%-?%d+$') then return nil end
  local kc = string.match(k, '^(.-)/%d+$') or k
  if kc ~= '-' and not string.match(kc, '^%d+$') then return nil end
  local nl2 = string.find(p, '\n', nl + 1, true)
  if not nl2 or string.find(p, '\n', nl2 + 1, true) then return nil end
  return {s, g, q, d, a, st, l, f, k, t}, string.sub(p, nl + 1, nl2 - 1), string.sub(p, nl2 + 1)
end
local function record(v, h, body, result)
  return enc(v + 1, 'J1 ' .. table.concat(h, ' ') .. '\n' .. body .. '\n' .. result)
end
local n = tonumber(ARGV[7])
local ai = 9 + n
local adds = tonumber(ARGV[ai])
ai = ai + 1
-- Every refusal before the first write, with as few calls as that takes (each redis.call
-- costs more than the command itself): the types of the sets this step writes; the acked
-- record, read once; a seq of another kind fails its INCRBY, the first write.
local sets = {}
for i = 0, adds - 1 do
  if ARGV[ai + 6 * i + 1] == 'd' then sets[5] = true else sets[1] = true end
end
if ARGV[2] == '1' then sets[2] = true; sets[3] = true end
if n > 0 then sets[1] = true; sets[2] = true end
for i, _ in pairs(sets) do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'zset' and t ~= 'none' then return wrongtype() end
end
local cur = false
if ARGV[2] == '1' then
  cur = redis.pcall('GET', KEYS[7])
  if type(cur) == 'table' or (cur and not ver(cur)) then return wrongtype() end
end
local added = {}
if adds > 0 then
  local last = redis.call('INCRBY', KEYS[6], adds)
  for i = 1, adds do
    local seq = string.format('%d', last - adds + i)
    local id = ARGV[ai]
    if id == '' then id = seq end
    local new = '0'
    local line = 'J1 ' .. ARGV[ai + 3] .. ' ' .. seq .. ' ' .. ARGV[ai + 4] .. '\n' .. ARGV[ai + 5] .. '\n'
    if redis.call('SET', ARGV[1] .. id, enc(1, line), 'NX') then
      new = '1'
      if ARGV[ai + 1] == 'd' then
        redis.call('ZADD', KEYS[5], ARGV[ai + 2], id .. '#0')
      elseif ARGV[ai + 1] == 'l' then
        local score = -((tonumber(seq) % 2147483648) + 1)
        redis.call('ZADD', KEYS[1], string.format('%d', score), id .. '#0')
      else
        local rank = tonumber(string.sub(ARGV[ai + 1], 2))
        local score = rank * 2147483648 + (tonumber(seq) % 2147483648)
        redis.call('ZADD', KEYS[1], string.format('%d', score), id .. '#0')
      end
    end
    added[#added + 1] = id
    added[#added + 1] = seq
    added[#added + 1] = new
    ai = ai + 6
  end
end
local fin, detail = 'none', ''
if ARGV[2] == '1' then
  local key = KEYS[7]
  if not cur then
    fin = 'missing'
  else
    local v = ver(cur)
    local h, body = hdr(string.sub(cur, 10))
    if not h then
      fin = 'legacy'
    elseif h[1] ~= 'a' or h[10] ~= ARGV[4] or h[10] == '-' then
      fin, detail = 'lease', h[1]
    else
      local old = ARGV[3] .. '#' .. h[2]
      -- `Keep::none`: a count of 0 or an age of 0 keeps no completed job.
      local kc, ka = string.match(h[9], '^(.-)/(%d+)$')
      if not kc then kc = h[9] end
      if tonumber(kc) == 0 or tonumber(ka or '1') == 0 then
        redis.call('DEL', key)
        fin = 'deleted'
      else
        local gen = string.format('%d', tonumber(h[2]) + 1)
        h[1], h[2], h[8], h[10] = 'c', gen, ARGV[5], '-'
        redis.call('SET', key, record(v, h, body, ARGV[6]))
        redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3] .. '#' .. gen)
        fin, detail = 'completed', h[9]
      end
      redis.call('ZREM', KEYS[2], old)
    end
  end
  if fin ~= 'completed' and fin ~= 'deleted' then return {added, fin, detail, {}, {}, 0} end
end
local leased, others, paused = {}, {}, 0
if n > 0 then
  if redis.call('EXISTS', KEYS[4]) == 1 then
    paused = 1
  else
    local m = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '+inf', 'LIMIT', 0, n)
    for i = 1, #m do
      local mem = m[i]
      redis.call('ZREM', KEYS[1], mem)
      redis.call('ZADD', KEYS[2], ARGV[8], mem)
      local ok = false
      local id, gen = string.match(mem, '^(.*)#(%d+)$')
      if id then
        local key = ARGV[1] .. id
        local cur = redis.pcall('GET', key)
        if type(cur) == 'string' then
          local v = ver(cur)
          if v then
            local h, body, result = hdr(string.sub(cur, 10))
            if h and h[1] == 'w' and tonumber(h[2]) == tonumber(gen) then
              local token = ARGV[8 + i]
              h[1], h[5], h[7], h[10] = 'a', string.format('%d', tonumber(h[5]) + 1), ARGV[8], token
              redis.call('SET', key, record(v, h, body, result))
              leased[#leased + 1] = id
              leased[#leased + 1] = h[5]
              leased[#leased + 1] = token
              leased[#leased + 1] = body
              ok = true
            end
          end
        end
      end
      if not ok then others[#others + 1] = mem end
    end
  end
end
return {added, fin, detail, leased, others, paused}
",
    )
});
