"""The distributed queue: Redis Streams with a consumer group.

Layout (every key under ``prefix``):

- ``s:{label}``: a stream per label; submit ``XADD``s the item id and, in the same script,
  moves it into the consumer group ``scheduler``'s pending entries list (``XREADGROUP >``),
  so the group's PEL is exactly the set of the label's open (pending or running) messages;
  a finished or dead-lettered message is ``XACK``ed, and ``XDEL``eted, or (a batch of acks)
  trimmed away with the stream's nodes older than its oldest open entry.
- ``t:{item}``: a hash per message (body, state, attempts, lease, last error); the body is the
  ``ScheduleMessage`` encoding (:mod:`services.scheduler.queue.codec`), or JSON from earlier versions;
  ``seq`` (its submission order) is 16 digits, or unpadded from earlier versions (read as either).
- ``g:{group}``: the open item ids of one (user, cube, label) group in order; only the
  head is deliverable, which keeps the order per group.
- ``r:{label}``: the label's ready set: every group head that is pending, scored by
  -priority, members ``{seq:016d}|{item}``, so a receive takes the first few in delivery
  order (priority, then submission) without reading the rest of the queue.
- ``running``: a sorted set of leased items by lease deadline (visibility timeouts).
- ``open``, ``u:{user}``: counters for the bound and for WaitForTasks; ``dead``: the
  dead letters by dead-letter sequence; ``labels``: registered labels.

Retention: a task's hash is the only key left of it once it is finished, and the script that
finishes it sets its ``PEXPIRE`` (done: ``task_retention_s``; failed and dead-lettered:
``dead_letter_retention_s``; a replay ``PERSIST``s it), so Redis itself frees finished tasks, on
every replica's behalf, with no sweeper to run or coordinate. A dead letter is also a member of
``dead``: members whose hash expired are dropped from its oldest end (by every worker exchange,
count and listing), and a listing skips any other one it meets.

:meth:`RedisTaskQueue.purge_tasks` finds a user's or a cube's tasks with a ``SCAN`` of the task
hashes (no per-user index is kept on the hot path): an administrative call, a few seconds per
million tasks kept, that never blocks Redis for long.

State changes are Lua scripts (a worker stream's acks and its next receive: one round trip), so they are atomic,
survive a crash of the scheduler at any point, and replicas may share one Redis.
A Redis that cannot be reached is UNAVAILABLE; a submit is acknowledged only after its
script ran (with ``appendonly yes`` and ``appendfsync always`` it is on disk by then).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio

from services.scheduler.queue import codec
from services.scheduler.queue.base import (
    BUILTIN_LABELS,
    Delivery,
    HeldDelivery,
    Message,
    PurgeCounts,
    QueueLimits,
    Task,
    TaskQueue,
    TaskState,
    Verdict,
    not_in_flight,
    split_delivery_id,
    task_not_found,
)
from shared.errors import InvalidArgument, ResourceExhausted, Unavailable

GROUP = "scheduler"
CONSUMER = "scheduler"

# A (user, cube, label) group's deliverable message is the head of ``g:{group}`` when it is
# pending; every such head is in its label's ready set ``r:{label}``, scored by -priority with
# members "{seq:016d}|{item}", so ZRANGE gives them in delivery order (priority, then submission).
_FUNCS = """
--
-- Arguments of redis.call are passed as strings wherever they can be: a Lua number is formatted
-- with printf("%.17g") on every call, and string.format too cost more than the command itself.
-- seq is stored as 16 digits (pad_seq); earlier versions stored it unpadded: padded here.
local function ready_entry(prio, seq, item)
  if #seq < 16 then seq=string.rep('0', 16-#seq)..seq end
  -- -priority, written as a string: "5" -> "-5", "-5" -> "5", "0" -> "-0" (0 to ZADD).
  local score
  if string.byte(prio, 1)==45 then score=string.sub(prio, 2) else score='-'..prio end
  return score, seq..'|'..item
end
local function ready_add(pfx, label, prio, seq, item)
  local score, member=ready_entry(prio, seq, item)
  redis.call('ZADD', pfx..':r:'..label, score, member)
end
-- Adds (sign 1) or takes (-1) counts {user -> {cube -> n}} to the users' open counters u:{user}:
-- one HINCRBY for a user's only cube, else one HMGET and one HSET for all of them (a batch spans
-- many cubes: a call per cube cost more than the rest of a worker exchange's bookkeeping).
local function add_counts(pfx, users, sign)
  for user,cubes in pairs(users) do
    local key=pfx..':u:'..user
    local names={}
    for cube in pairs(cubes) do names[#names+1]=cube end
    if #names==1 then
      redis.call('HINCRBY', key, names[1], tostring(sign*cubes[names[1]]))
    else
      for j=1,#names,500 do
        local part={unpack(names, j, math.min(j+499, #names))}
        local cur=redis.call('HMGET', key, unpack(part))
        local kv={}
        for i,cube in ipairs(part) do
          kv[#kv+1]=cube; kv[#kv+1]=tostring((tonumber(cur[i]) or 0)+sign*cubes[cube])
        end
        redis.call('HSET', key, unpack(kv))
      end
    end
  end
end
local function pad_seq(n)
  -- tostring writes 14 significant digits ("%.14g"): past those, the exact (slower) format.
  if n >= 1e14 then return string.format('%016d', n) end
  local s=tostring(n)
  return string.rep('0', 16-#s)..s
end
local STATE={[1]='1', [2]='2', [3]='3', [4]='4', [5]='5'}
-- Puts item in its label's ready set if it is pending; with adds {label -> {score, member, ...}},
-- keeps its entry there instead, for one ZADD per label afterwards (add_ready).
local function promote(pfx, item, adds)
  local st=redis.call('HMGET', pfx..':t:'..item, 'state', 'label', 'prio', 'seq')
  if st[1]~='1' then return end
  if not adds then return ready_add(pfx, st[2], st[3], st[4], item) end
  local l=adds[st[2]]; if not l then l={}; adds[st[2]]=l end
  local score, member=ready_entry(st[3], st[4], item)
  l[#l+1]=score; l[#l+1]=member
end
-- Adds the ready-set entries {label -> {score, member, ...}}: one ZADD per label.
local function add_ready(pfx, adds)
  for label,l in pairs(adds) do
    for j=1,#l,1000 do redis.call('ZADD', pfx..':r:'..label, unpack(l, j, math.min(j+999, #l))) end
  end
end
-- Dead letters whose hash expired (dead_letter_retention_s), from the oldest end of 'dead'.
local function sweep_dead(pfx, limit)
  for _=1,limit do
    local head=redis.call('ZRANGE', pfx..':dead', 0, 0)
    if #head==0 or redis.call('EXISTS', pfx..':t:'..head[1])==1 then return end
    redis.call('ZREM', pfx..':dead', head[1])
  end
end
-- action: ack | nack | fail | release | unlease (release, not counting the attempt) | expire
-- keep: {milliseconds a done task is kept, milliseconds a failed or dead-lettered one is kept}
local function finish(pfx, item, lease, action, err, now, max, keep)
  local k=pfx..':t:'..item
  local st=redis.call('HMGET', k, 'state', 'lease', 'attempts', 'lease_until', 'grp', 'label', 'sid', 'user', 'cube',
    'prio', 'seq')
  if st[1]~='2' then return -1 end
  if action=='expire' then
    if tonumber(st[4]) > tonumber(now) then return -1 end
  elseif st[2]~=lease then return -1 end
  local new
  if action=='unlease' then redis.call('HINCRBY', k, 'attempts', -1) end
  if action=='ack' then new=3 elseif action=='release' or action=='unlease' then new=1 elseif action=='fail' then new=4
  elseif (tonumber(st[3]) or 0) >= max then new=5 else new=1 end
  redis.call('ZREM', pfx..':running', item)
  redis.call('HSET', k, 'state', STATE[new], 'lease', '', 'lease_until', '0', 'updated_at', now)
  if action=='nack' or action=='fail' or action=='expire' then redis.call('HSET', k, 'last_error', err) end
  if new==1 then
    -- Deliverable again if it heads its group (one leased ahead waits behind its head).
    if redis.call('LINDEX', pfx..':g:'..st[5], 0)==item then ready_add(pfx, st[6], st[10], st[11], item) end
  else
    redis.call('XACK', pfx..':s:'..st[6], 'scheduler', st[7])
    redis.call('XDEL', pfx..':s:'..st[6], st[7])
    redis.call('LREM', pfx..':g:'..st[5], 1, item)
    redis.call('DECR', pfx..':open')
    redis.call('HINCRBY', pfx..':u:'..st[8], st[9], -1)
    if new==5 then
      local d=redis.call('INCR', pfx..':deadseq')
      redis.call('ZADD', pfx..':dead', d, item)
      redis.call('HSET', k, 'dead_seq', d)
    end
    redis.call('PEXPIRE', k, new==3 and keep[1] or keep[2])
    local nxt=redis.call('LINDEX', pfx..':g:'..st[5], 0)
    if nxt then promote(pfx, nxt) end
  end
  return new
end
"""

# ARGV: pfx, max_pending, now, the batch as one JSON array of [item, label, group, priority (a
# string), user, cube, the body's length] (one argument: packing six per message cost the scheduler
# more than the script), then the bodies, one after the other in one argument (binary: the
# ScheduleMessage encoding, see codec; redis-py packs each argument apart, in Python).
_SUBMIT = """
local pfx=ARGV[1]; local max=tonumber(ARGV[2]); local now=ARGV[3]; local bodies=ARGV[5]
local new={}; local off=1
for i,m in ipairs(cjson.decode(ARGV[4])) do
  local n=m[7]
  if redis.call('EXISTS', pfx..':t:'..m[1])==0 then m[7]=string.sub(bodies, off, off+n-1); table.insert(new, m) end
  off=off+n
end
local open=tonumber(redis.call('GET', pfx..':open') or '0')
if open+#new > max then return {-1, open} end
if #new==0 then return {0, 0} end
local seq=redis.call('INCRBY', pfx..':seq', #new) - #new
local labels={}; local users={}
for i,m in ipairs(new) do
  local item=m[1]; local label=m[2]; local prio=m[4]; local user=m[5]; local cube=m[6]; local sq=pad_seq(seq+i)
  local sid=redis.call('XADD', pfx..':s:'..label, '*', 'item', item)
  labels[label]=(labels[label] or 0)+1
  -- attempts, last_error, lease, lease_until and dead_seq are left out until set: an absent one
  -- reads as 0 or empty (each field written is a cost on every submit).
  redis.call('HSET', pfx..':t:'..item, 'label', label, 'grp', m[3], 'prio', prio, 'body', m[7],
    'user', user, 'cube', cube, 'seq', sq, 'state', '1', 'updated_at', now, 'sid', sid)
  if redis.call('RPUSH', pfx..':g:'..m[3], item)==1 then ready_add(pfx, label, prio, sq, item) end
  local u=users[user]; if not u then u={}; users[user]=u end
  u[cube]=(u[cube] or 0)+1
end
-- The new entries join the consumer group's pending entries list: the PEL is the open messages.
for label,k in pairs(labels) do
  redis.call('XREADGROUP', 'GROUP', 'scheduler', 'scheduler', 'COUNT', k, 'STREAMS', pfx..':s:'..label, '>')
end
add_counts(pfx, users, 1)
redis.call('INCRBY', pfx..':open', #new)
return {0, #new}
"""

# Applies a worker's verdicts (acks, nacks), then expires run-out leases and leases up to count
# ready messages of the labels, best first: a worker stream's whole exchange in one round trip.
# The acks are one batch: one ZREM, XACK, XTRIM per label and counter update for all of them.
# ARGV: pfx, now, lease_until, count, max_attempts, lease_prefix, then JSON arrays: labels, acks
# (delivery ids), nacks ([item, delivery id, "nack" or "fail", error]), then the retention of done
# tasks and of failed or dead-lettered ones (milliseconds); then (optional, for lookahead) a JSON
# array of the delivery ids leased ahead and given back unsent, and "1" to lease ahead.
#
# Lookahead: a group's messages go out one at a time (the next only once the previous is acked).
# With it, when this exchange leases a group's head it also leases the message behind it, and
# the stream holds that one until the worker acks the head, then sends it at once, while the next
# exchange applies the ack: the worker does not wait for Redis between the two. One message per
# group is leased ahead, and only when no message of a higher priority waits: the one behind it
# goes back to the queue's order (priority, then submission), so a group with many messages does
# not keep the worker from the others. A message leased ahead is running but not its group's
# head; it is never in the ready set, and when it comes back unsent (unlease, expiry) it stays
# behind its head (finish adds a message to the ready set only when it heads its group).
#
# Returns: the (1-based) positions of the acks and of the nacks not applied, the deliveries as one
# string: for each, a header (struct ">HII": the delivery id's length, the attempt, the body's
# length), the delivery id, the stored body; and the same for the messages leased ahead, each with
# the delivery id it waits behind (">HHII": that id's length first, the id before the rest). One
# bulk reply instead of three per delivery: redis-py parses replies in Python, element by element,
# and that cost more than the script's share.
_ANSWER_RECEIVE = """
local pfx=ARGV[1]; local now=ARGV[2]; local untl=ARGV[3]; local count=tonumber(ARGV[4]); local max=tonumber(ARGV[5])
local rnd=ARGV[6]; local labels=cjson.decode(ARGV[7]); local acks=cjson.decode(ARGV[8])
local nacks=cjson.decode(ARGV[9]); local keep={ARGV[10], ARGV[11]}
local look=ARGV[13]=='1'
local bad_acks={}; local bad_nacks={}
local nl=0; local running={}; local held={}
-- Leases the pending message item, unless its priority's score is above best (a message of a
-- higher priority waits); returns its lease, attempt, body and group, or nil.
local function lease_one(item, best)
  local k=pfx..':t:'..item
  local st=redis.call('HMGET', k, 'state', 'body', 'attempts', 'grp', 'prio')
  if st[1]~='1' or (best and -tonumber(st[5]) > best) then return nil end
  nl=nl+1
  local lease=item..'/'..rnd..string.format('%04x', nl)
  local a=(tonumber(st[3]) or 0)+1
  redis.call('HSET', k, 'state', '2', 'attempts', a, 'lease', lease, 'lease_until', untl, 'updated_at', now)
  running[#running+1]=untl; running[#running+1]=item
  return lease, a, st[2], st[4]
end
if ARGV[12] then
  for _,d in ipairs(cjson.decode(ARGV[12])) do
    finish(pfx, string.match(d, '^(.*)/'), d, 'unlease', '', now, max, keep)
  end
end
local done={}; local sids={}; local users={}; local adds={}
for i,d in ipairs(acks) do
  local item=string.match(d, '^(.*)/')
  local k=pfx..':t:'..item
  local st=redis.call('HMGET', k, 'state', 'lease', 'grp', 'label', 'sid', 'user', 'cube')
  if st[1]~='2' or st[2]~=d then
    table.insert(bad_acks, i)
  else
    redis.call('HSET', k, 'state', '3', 'lease', '', 'lease_until', '0', 'updated_at', now)
    redis.call('PEXPIRE', k, keep[1])
    done[#done+1]=item
    local l=sids[st[4]]; if not l then l={}; sids[st[4]]=l end
    l[#l+1]=st[5]
    local u=users[st[6]]; if not u then u={}; users[st[6]]=u end
    u[st[7]]=(u[st[7]] or 0)+1
    local g=pfx..':g:'..st[3]
    redis.call('LREM', g, 1, item)
    local nxt=redis.call('LINDEX', g, 0)
    if nxt then promote(pfx, nxt, adds) end
  end
end
add_ready(pfx, adds)
if #done > 0 then
  for j=1,#done,1000 do redis.call('ZREM', pfx..':running', unpack(done, j, math.min(j+999, #done))) end
  for label,l in pairs(sids) do
    local s=pfx..':s:'..label
    for j=1,#l,1000 do redis.call('XACK', s, 'scheduler', unpack(l, j, math.min(j+999, #l))) end
    -- Instead of an XDEL per entry (the costliest command of an ack): drop the stream's whole
    -- nodes older than its oldest open entry.
    local pel=redis.call('XPENDING', s, 'scheduler')
    if pel[1]==0 then redis.call('XTRIM', s, 'MAXLEN', 0) else redis.call('XTRIM', s, 'MINID', '~', pel[2]) end
  end
  redis.call('DECRBY', pfx..':open', #done)
  add_counts(pfx, users, -1)
end
for i,n in ipairs(nacks) do
  if finish(pfx, n[1], n[2], n[3], n[4], now, max, keep) < 0 then table.insert(bad_nacks, i) end
end
local out={}
if count > 0 then
  for _,item in ipairs(redis.call('ZRANGEBYSCORE', pfx..':running', '-inf', now, 'LIMIT', 0, 1000)) do
    finish(pfx, item, '', 'expire', 'visibility timeout: no ack or nack in time', now, max, keep)
  end
  sweep_dead(pfx, 100)
  local members={}
  if #labels==1 then
    local rows=redis.call('ZPOPMIN', pfx..':r:'..labels[1], count)
    for j=1,#rows,2 do members[#members+1]=rows[j] end
  else
    local cands={}
    for _,label in ipairs(labels) do
      local rows=redis.call('ZRANGE', pfx..':r:'..label, 0, count-1, 'WITHSCORES')
      for j=1,#rows,2 do table.insert(cands, {tonumber(rows[j+1]), rows[j], label}) end
    end
    table.sort(cands, function(a, b) if a[1]~=b[1] then return a[1]<b[1] end return a[2]<b[2] end)
    for j=1,math.min(count, #cands) do
      redis.call('ZREM', pfx..':r:'..cands[j][3], cands[j][2])
      members[j]=cands[j][2]
    end
  end
  -- The best score still waiting in the labels' ready sets: what is leased ahead must not pass it.
  local best
  if look then
    for _,label in ipairs(labels) do
      local top=redis.call('ZRANGE', pfx..':r:'..label, 0, 0, 'WITHSCORES')
      if top[2] and (not best or tonumber(top[2]) < best) then best=tonumber(top[2]) end
    end
  end
  for _,member in ipairs(members) do
    local lease, a, body, grp=lease_one(string.sub(member, 18))
    if lease then
      out[#out+1]=struct.pack('>HII', #lease, a, #body)..lease..body
      if look then
        local nxt=redis.call('LINDEX', pfx..':g:'..grp, 1)
        if nxt then
          local l2, a2, b2=lease_one(nxt, best)
          if l2 then held[#held+1]=struct.pack('>HHII', #lease, #l2, a2, #b2)..lease..l2..b2 end
        end
      end
    end
  end
end
for j=1,#running,1000 do redis.call('ZADD', pfx..':running', unpack(running, j, math.min(j+999, #running))) end
return {bad_acks, bad_nacks, table.concat(out), table.concat(held)}
"""

_FINISH = """
return finish(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), {ARGV[8], ARGV[9]})
"""

# ARGV: pfx, limit.
_SWEEP_DEAD = """
sweep_dead(ARGV[1], tonumber(ARGV[2]))
return redis.call('ZCARD', ARGV[1]..':dead')
"""

# Removes tasks whatever their state (PurgeTasks). ARGV: pfx, then the item ids as one JSON array.
# Returns how many were removed while pending, running, dead-lettered, finished (done or failed).
_PURGE = """
local pfx=ARGV[1]; local n={0, 0, 0, 0}
for _,item in ipairs(cjson.decode(ARGV[2])) do
  local k=pfx..':t:'..item
  local st=redis.call('HMGET', k, 'state', 'label', 'grp', 'sid', 'user', 'cube', 'seq')
  if st[1] then
    if st[1]=='1' or st[1]=='2' then
      local s=pfx..':s:'..st[2]
      redis.call('XACK', s, 'scheduler', st[4])
      redis.call('XDEL', s, st[4])
      redis.call('ZREM', pfx..':r:'..st[2], string.format('%016d', tonumber(st[7]))..'|'..item)
      redis.call('ZREM', pfx..':running', item)
      local g=pfx..':g:'..st[3]
      local head=redis.call('LINDEX', g, 0)
      redis.call('LREM', g, 1, item)
      redis.call('DECR', pfx..':open')
      if redis.call('HINCRBY', pfx..':u:'..st[5], st[6], -1) <= 0 then redis.call('HDEL', pfx..':u:'..st[5], st[6]) end
      if head==item then
        local nxt=redis.call('LINDEX', g, 0)
        if nxt then promote(pfx, nxt) end
      end
      if st[1]=='1' then n[1]=n[1]+1 else n[2]=n[2]+1 end
    elseif st[1]=='5' then
      redis.call('ZREM', pfx..':dead', item)
      n[3]=n[3]+1
    else
      n[4]=n[4]+1
    end
    redis.call('DEL', k)
  end
end
return n
"""

_REPLAY = """
local pfx=ARGV[1]; local item=ARGV[2]; local now=ARGV[3]; local k=pfx..':t:'..item
local st=redis.call('HMGET', k, 'state', 'label', 'grp', 'user', 'cube')
if st[1]~='5' then return 0 end
local sid=redis.call('XADD', pfx..':s:'..st[2], '*', 'item', item)
redis.call('XREADGROUP', 'GROUP', 'scheduler', 'scheduler', 'COUNT', 1, 'STREAMS', pfx..':s:'..st[2], '>')
-- A replayed message goes behind the open ones (a new sequence number), like a new submission.
local seq=pad_seq(redis.call('INCR', pfx..':seq'))
redis.call('HSET', k, 'state', '1', 'attempts', '0', 'sid', sid, 'seq', seq, 'dead_seq', '0', 'updated_at', now)
redis.call('PERSIST', k)
if redis.call('RPUSH', pfx..':g:'..st[3], item)==1 then promote(pfx, item) end
redis.call('INCR', pfx..':open')
redis.call('HINCRBY', pfx..':u:'..st[4], st[5], 1)
redis.call('ZREM', pfx..':dead', item)
return 1
"""

# A user's open messages, all cubes: the sum of u:{user}'s fields (ARGV[1]), added up here:
# WaitForTasks asks every few milliseconds while a user's messages are worked on, and redis-py
# parsing a value per cube in Python cost more than the rest of the call.
_UNFINISHED = """
if ARGV[2] and ARGV[2]~='' then return tonumber(redis.call('HGET', ARGV[1], ARGV[2]) or '0') end
local n=0
for _,v in ipairs(redis.call('HVALS', ARGV[1])) do n=n+tonumber(v) end
return n
"""

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_HEADER = struct.Struct(">HII")


def _unpack_deliveries(out: bytes) -> list[Delivery]:
    """The deliveries of _ANSWER_RECEIVE's reply (see there)."""
    deliveries = []
    pos, end, unpack, size = 0, len(out), _HEADER.unpack_from, _HEADER.size
    while pos < end:
        n_lease, attempt, n_body = unpack(out, pos)
        pos += size
        lease = out[pos : pos + n_lease].decode()
        pos += n_lease
        body = out[pos : pos + n_body]
        pos += n_body
        deliveries.append(Delivery(lease, codec.normalize(body) if codec.is_legacy(body) else body, attempt))
    return deliveries


_HELD_HEADER = struct.Struct(">HHII")


def _unpack_held(out: bytes) -> list[HeldDelivery]:
    """The messages leased ahead of _ANSWER_RECEIVE's reply (see there)."""
    held = []
    pos, end, unpack, size = 0, len(out), _HELD_HEADER.unpack_from, _HELD_HEADER.size
    while pos < end:
        n_behind, n_lease, attempt, n_body = unpack(out, pos)
        pos += size
        behind = out[pos : pos + n_behind].decode()
        pos += n_behind
        lease = out[pos : pos + n_lease].decode()
        pos += n_lease
        body = out[pos : pos + n_body]
        pos += n_body
        held.append(
            HeldDelivery(behind, Delivery(lease, codec.normalize(body) if codec.is_legacy(body) else body, attempt))
        )
    return held


def _json(value: Any) -> str:
    """A script argument: JSON with text as UTF-8 (what Redis's cjson reads back byte for byte)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _unavailable_error(exc: Exception) -> Unavailable:
    return Unavailable(
        "the scheduler's Redis cannot be reached", reason="REDIS_UNAVAILABLE", metadata={"error": str(exc)[:200]}
    )


async def _run_script_async(client: redis.asyncio.Redis, script: Any, args: Sequence[Any]) -> Any:
    """``script(args=args)`` on one of ``client``'s pooled connections, directly; UNAVAILABLE when
    Redis cannot be reached.

    The service's hot path (every submit, every worker exchange) comes here. redis-py's command
    path (pool and retry wrappers, per-command dispatch, metrics hooks) cost ~110 µs of latency a
    call, about a tenth of a worker exchange's round trip (bench_scheduler). The connection keeps
    redis-py's own handling: authentication, TLS, reconnecting, and dropping itself when a call
    fails or is cancelled between request and reply (so it never goes back with a reply pending).
    """

    async def evalsha(conn: Any) -> Any:
        try:
            await conn.send_packed_command(conn.pack_command("EVALSHA", script.sha, 0, *args))
            return await conn.read_response()
        except redis.exceptions.NoScriptError:
            # Redis restarted, or SCRIPT FLUSH: loaded again (on this connection), then run as asked.
            await conn.send_command("SCRIPT", "LOAD", script.script)
            script.sha = (await conn.read_response()).decode()
            await conn.send_packed_command(conn.pack_command("EVALSHA", script.sha, 0, *args))
            return await conn.read_response()

    pool = client.connection_pool
    try:
        conn = await pool.get_connection()
        try:
            # The client's own retry policy, as its commands have it: a pooled connection that
            # Redis closed meanwhile (a restart) is connected again and the call sent again.
            return await conn.retry.call_with_retry(lambda: evalsha(conn), lambda _error: conn.disconnect())
        finally:
            await pool.release(conn)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise _unavailable_error(exc) from None


def _unavailable(fn: F) -> F:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise _unavailable_error(exc) from None

    return wrapped  # type: ignore[return-value]


_TASK_FIELDS = ("body", "state", "attempts", "last_error", "updated_at")


class RedisTaskQueue(TaskQueue):
    def __init__(self, url: str, limits: QueueLimits | None = None, prefix: str = "memos:sched") -> None:
        super().__init__(limits)
        self.prefix = prefix
        self._r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5.0, socket_connect_timeout=2.0)
        # Bodies are binary (codec): what reads or writes them goes through a client that leaves
        # replies as bytes.
        self._rb = redis.Redis.from_url(url, decode_responses=False, socket_timeout=5.0, socket_connect_timeout=2.0)
        self._submit = self._rb.register_script(_FUNCS + _SUBMIT)
        self._answer_receive = self._rb.register_script(_FUNCS + _ANSWER_RECEIVE)
        # The service's hot path (submits, worker exchanges) runs these scripts from its event
        # loop, through an asyncio client: a call through a thread of the loop's executor cost two
        # thread hand-offs, ~10% of the throughput of submit -> handle -> ack (bench_scheduler).
        self._arb = redis.asyncio.Redis.from_url(
            url, decode_responses=False, socket_timeout=5.0, socket_connect_timeout=2.0
        )
        self._answer_receive_async = self._arb.register_script(_FUNCS + _ANSWER_RECEIVE)
        self._submit_async = self._arb.register_script(_FUNCS + _SUBMIT)
        self._finish = self._r.register_script(_FUNCS + _FINISH)
        self._replay = self._r.register_script(_FUNCS + _REPLAY)
        self._sweep_dead = self._r.register_script(_FUNCS + _SWEEP_DEAD)
        self._purge = self._r.register_script(_FUNCS + _PURGE)
        self._unfinished = self._r.register_script(_UNFINISHED)
        self._unfinished_async = self._arb.register_script(_UNFINISHED)
        self._groups: set[str] = set()
        self._seen_labels: set[str] = set()

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- labels ---------------------------------------------------------------
    @_unavailable
    def registered_labels(self) -> set[str]:
        labels = set(self._r.smembers(self._k("labels")))
        self._seen_labels |= labels
        return labels

    @_unavailable
    def _store_label(self, label: str) -> None:
        self._r.sadd(self._k("labels"), label)
        self._seen_labels.add(label)

    def _known_among(self, labels: set[str]) -> set[str]:
        # Registrations are never taken back: labels seen registered (by any replica) stay known,
        # and a submit asks Redis only for a label it has not seen yet.
        seen = BUILTIN_LABELS | self._seen_labels
        return seen if labels <= seen else self.known_labels()

    # -- helpers --------------------------------------------------------------
    def _ensure_group(self, label: str) -> str:
        stream = self._k("s", label)
        if stream not in self._groups:
            try:
                self._r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(stream)
        return stream

    def _keep(self) -> list[int]:
        """PEXPIRE's milliseconds for a done task, and for a failed or dead-lettered one."""
        return [
            max(1, round(self.limits.task_retention_s * 1000)),
            max(1, round(self.limits.dead_letter_retention_s * 1000)),
        ]

    def _run_finish(self, item_id: str, lease: str, action: str, error: str = "") -> int:
        args = [self.prefix, item_id, lease, action, error, time.time(), self.limits.max_attempts, *self._keep()]
        return int(self._finish(args=args))

    # -- operations -----------------------------------------------------------
    def _submit_args(self, messages: Sequence[Message], bodies: Sequence[bytes] | None) -> tuple[list[Any], list[str]]:
        batch = self.prepare(messages)
        for label in {m.label for m in batch}:
            self._ensure_group(label)
        bodies = codec.bodies_for(messages, batch, bodies)
        rows = [
            [m.item_id, m.label, m.group, str(m.priority), m.user_id, m.cube_id, len(body)]
            for m, body in zip(batch, bodies, strict=True)
        ]
        args = [self.prefix, self.limits.max_pending, time.time(), _json(rows), b"".join(bodies)]
        return args, [m.item_id for m in batch]

    def _submit_result(self, reply: Any, ids: list[str]) -> list[str]:
        status, n = reply
        if int(status) < 0:
            raise ResourceExhausted(
                "the queue is full; retry later",
                reason="QUEUE_FULL",
                metadata={"limit": str(self.limits.max_pending), "pending": str(n)},
                retriable=True,
            )
        return ids

    @_unavailable
    def submit(self, messages: Sequence[Message], bodies: Sequence[bytes] | None = None) -> list[str]:
        args, ids = self._submit_args(messages, bodies)
        return self._submit_result(self._submit(args=args), ids)

    def submit_async(
        self, messages: Sequence[Message], bodies: Sequence[bytes] | None = None
    ) -> asyncio.Future[list[str]]:
        labels = {m.label for m in messages}
        if not labels <= BUILTIN_LABELS | self._seen_labels or any(self._k("s", x) not in self._groups for x in labels):
            # A label this replica has not used yet: checking and preparing it asks Redis
            # (blocking calls), in a thread, as the base class does.
            return super().submit_async(messages, bodies)
        args, ids = self._submit_args(messages, bodies)  # a bad batch raises here, at once

        async def run() -> list[str]:
            return self._submit_result(await _run_script_async(self._arb, self._submit_async, args), ids)

        return asyncio.ensure_future(run())

    @_unavailable
    def receive(
        self, labels: Iterable[str], max_count: int, visibility_timeout_s: float | None = None
    ) -> list[Delivery]:
        labels = list(dict.fromkeys(labels))
        if not labels or max_count <= 0:
            return []
        return self.answer_and_receive((), labels, max_count, visibility_timeout_s)[1]

    @_unavailable
    def answer_many(self, verdicts: Sequence[Verdict]) -> list[str]:
        return self.answer_and_receive(verdicts, (), 0)[0] if verdicts else []

    def _exchange_args(
        self,
        verdicts: Sequence[Verdict],
        labels: Iterable[str],
        max_count: int,
        visibility_timeout_s: float | None,
        unlease: Sequence[str] = (),
        lookahead: bool = False,
    ) -> tuple[list[Any] | None, int, list[bool], tuple[list[int], list[int]]]:
        labels = list(dict.fromkeys(labels))
        count = max(max_count, 0) if labels else 0
        bad = [False] * len(verdicts)
        acks: list[str] = []
        nacks: list[list[str]] = []
        placed: tuple[list[int], list[int]] = ([], [])  # positions in verdicts of acks, of nacks
        seen: set[str] = set()
        for i, v in enumerate(verdicts):
            item_id, sep, lease = v.delivery_id.rpartition("/")
            if not sep or not item_id or not lease or v.delivery_id in seen:  # malformed, or answered earlier
                bad[i] = True
                continue
            seen.add(v.delivery_id)
            if v.success:
                acks.append(v.delivery_id)
                placed[0].append(i)
            else:
                nacks.append([item_id, v.delivery_id, "nack" if v.retry else "fail", v.error])
                placed[1].append(i)
        unlease = [d for d in unlease if "/" in d[1:-1]]
        if not (acks or nacks or count or unlease):
            return None, count, bad, placed
        now = time.time()
        # Each lease is this random prefix and the delivery's position: 16 hex digits, as new_delivery_id.
        args = [self.prefix, now, now + self._vt(visibility_timeout_s), count, self.limits.max_attempts]
        args += [os.urandom(6).hex(), _json(labels), _json(acks), _json(nacks), *self._keep()]
        if unlease or lookahead:
            args += [_json(unlease), "1" if lookahead else "0"]
        return args, count, bad, placed

    @staticmethod
    def _exchange_result(
        verdicts: Sequence[Verdict], reply: Any, count: int, bad: list[bool], placed: tuple[list[int], list[int]]
    ) -> tuple[list[str], list[Delivery], list[HeldDelivery]]:
        deliveries: list[Delivery] = []
        held: list[HeldDelivery] = []
        if reply is not None:
            bad_acks, bad_nacks, out, held_out = reply
            for positions, failed in zip(placed, (bad_acks, bad_nacks), strict=True):
                for pos in failed:
                    bad[positions[int(pos) - 1]] = True
            if count:
                deliveries = _unpack_deliveries(out)
            if held_out:
                held = _unpack_held(held_out)
        return [v.delivery_id for v, b in zip(verdicts, bad, strict=True) if b], deliveries, held

    @_unavailable
    def answer_and_receive(
        self,
        verdicts: Sequence[Verdict],
        labels: Iterable[str],
        max_count: int,
        visibility_timeout_s: float | None = None,
    ) -> tuple[list[str], list[Delivery]]:
        args, count, bad, placed = self._exchange_args(verdicts, labels, max_count, visibility_timeout_s)
        reply = self._answer_receive(args=args) if args is not None else None
        failed, deliveries, _ = self._exchange_result(verdicts, reply, count, bad, placed)
        return failed, deliveries

    def answer_and_receive_async(
        self,
        verdicts: Sequence[Verdict],
        labels: Iterable[str],
        max_count: int,
        visibility_timeout_s: float | None = None,
    ) -> asyncio.Future[tuple[list[str], list[Delivery]]]:
        args, count, bad, placed = self._exchange_args(verdicts, labels, max_count, visibility_timeout_s)

        async def run() -> tuple[list[str], list[Delivery]]:
            reply = await _run_script_async(self._arb, self._answer_receive_async, args) if args is not None else None
            failed, deliveries, _ = self._exchange_result(verdicts, reply, count, bad, placed)
            return failed, deliveries

        return asyncio.ensure_future(run())

    supports_lookahead = True

    def answer_and_receive_ahead_async(
        self,
        verdicts: Sequence[Verdict],
        labels: Iterable[str],
        max_count: int,
        visibility_timeout_s: float | None = None,
        *,
        unlease: Sequence[str] = (),
    ) -> asyncio.Future[tuple[list[str], list[Delivery], list[HeldDelivery]]]:
        args, count, bad, placed = self._exchange_args(
            verdicts, labels, max_count, visibility_timeout_s, unlease, lookahead=True
        )

        async def run() -> tuple[list[str], list[Delivery], list[HeldDelivery]]:
            reply = await _run_script_async(self._arb, self._answer_receive_async, args) if args is not None else None
            return self._exchange_result(verdicts, reply, count, bad, placed)

        return asyncio.ensure_future(run())

    def _answer(self, delivery_id: str, action: str, error: str = "") -> int:
        item_id, _ = split_delivery_id(delivery_id)
        result = self._run_finish(item_id, delivery_id, action, error)
        if result < 0:
            raise not_in_flight(delivery_id)
        return result

    @_unavailable
    def ack(self, delivery_id: str) -> None:
        self._answer(delivery_id, "ack")

    @_unavailable
    def nack(self, delivery_id: str, error: str, retry: bool = True) -> TaskState:
        return TaskState(self._answer(delivery_id, "nack" if retry else "fail", error))

    @_unavailable
    def release(self, delivery_id: str, delivered: bool = True) -> None:
        self._answer(delivery_id, "release" if delivered else "unlease")

    def _task(self, item_id: str, row: list[bytes | None]) -> Task:
        """A task from its hash's _TASK_FIELDS, read as bytes (through ``_rb``)."""
        body, state, attempts, last_error, updated_at = row
        return Task(
            item_id,
            codec.decode(body or b"{}"),
            TaskState(int(state or 1)),
            int(attempts or 0),
            (last_error or b"").decode(),
            float(updated_at or 0),
        )

    @_unavailable
    def get_task(self, item_id: str) -> Task:
        key = self._k("t", item_id)
        if self._r.hget(key, "state") == "2":
            self._run_finish(item_id, "", "expire", "visibility timeout: no ack or nack in time")
        row = self._rb.hmget(key, *_TASK_FIELDS)
        if row[0] is None:
            raise task_not_found(item_id)
        return self._task(item_id, row)

    @_unavailable
    def unfinished_count(self, user_id: str, cube_id: str = "") -> int:
        key = self._k("u", user_id)
        if cube_id:
            return int(self._r.hget(key, cube_id) or 0)
        return int(self._unfinished(args=[key]))

    def unfinished_count_async(self, user_id: str, cube_id: str = "") -> asyncio.Future[int]:
        args = [self._k("u", user_id), cube_id]

        async def run() -> int:
            return int(await _run_script_async(self._arb, self._unfinished_async, args))

        return asyncio.ensure_future(run())

    @_unavailable
    def depth(self) -> dict[str, tuple[int, int]]:
        # A label's consumer-group PEL holds exactly its open messages; the running ones are
        # the leased items (few: workers times their in-flight limit), each of which names its label.
        labels = sorted(self.known_labels())
        pipe = self._r.pipeline(transaction=False)
        for label in labels:
            pipe.xpending(self._k("s", label), GROUP)
        open_counts = pipe.execute(raise_on_error=False)
        running: dict[str, int] = {}
        leased = self._r.zrange(self._k("running"), 0, -1)
        if leased:
            pipe = self._r.pipeline(transaction=False)
            for item in leased:
                pipe.hget(self._k("t", item), "label")
            for label in pipe.execute():
                if label:
                    running[label] = running.get(label, 0) + 1
        out: dict[str, tuple[int, int]] = {}
        for label, summary in zip(labels, open_counts, strict=True):
            n = int(summary["pending"]) if isinstance(summary, dict) else 0  # no stream yet: nothing open
            r = running.get(label, 0)
            out[label] = (max(n - r, 0), r)
        return out

    @_unavailable
    def dead_letter_count(self) -> int:
        return int(self._sweep_dead(args=[self.prefix, 1000]))

    @_unavailable
    def list_dead_letters(self, label: str = "", page_size: int = 100, page_token: str = "") -> tuple[list[Task], str]:
        page_size = max(1, min(page_size or 100, 1000))
        try:
            after = int(page_token) if page_token else 0
        except ValueError:
            raise InvalidArgument("bad page token", reason="BAD_PAGE_TOKEN", metadata={"field": "page_token"}) from None
        self._sweep_dead(args=[self.prefix, 1000])
        tasks: list[Task] = []
        last = after
        while True:
            chunk = self._r.zrangebyscore(
                self._k("dead"), f"({last}", "+inf", start=0, num=page_size + 1, withscores=True
            )
            if not chunk:
                return tasks, ""
            pipe = self._rb.pipeline(transaction=False)
            for item, _score in chunk:
                pipe.hmget(self._k("t", item), *_TASK_FIELDS, "label")
            for (item, score), row in zip(chunk, pipe.execute(), strict=True):
                if row[0] is None:  # expired (dead_letter_retention_s) or purged meanwhile
                    self._r.zrem(self._k("dead"), item)
                    last = int(score)
                    continue
                if label and row[-1] != label.encode():
                    last = int(score)
                    continue
                if len(tasks) == page_size:
                    return tasks, str(last)
                tasks.append(self._task(item, row[:-1]))
                last = int(score)
            if len(chunk) <= page_size:
                return tasks, ""

    @_unavailable
    def replay_dead_letters(self, item_ids: Sequence[str]) -> int:
        now = time.time()
        return sum(int(self._replay(args=[self.prefix, item, now])) for item in dict.fromkeys(item_ids))

    @_unavailable
    def purge_tasks(self, user_id: str = "", cube_id: str = "") -> PurgeCounts:
        if not user_id and not cube_id:
            raise InvalidArgument("user_id or cube_id is required", reason="MISSING_SELECTOR")
        counts = PurgeCounts()
        head = self._k("t", "")
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", head) + "*"
        batch: list[str] = []

        def flush() -> None:
            if not batch:
                return
            pipe = self._r.pipeline(transaction=False)
            for item in batch:
                pipe.hmget(head + item, "user", "cube")
            mine = [
                item
                for item, (user, cube) in zip(batch, pipe.execute(), strict=True)
                if (not user_id or user == user_id) and (not cube_id or cube == cube_id)
            ]
            batch.clear()
            if mine:
                # The script reads each task's state again: whatever happened since, it is removed.
                p, r, x, f = self._purge(args=[self.prefix, _json(mine)])
                counts.pending += int(p)
                counts.running += int(r)
                counts.dead_lettered += int(x)
                counts.finished += int(f)

        for key in self._r.scan_iter(match=pattern, count=1000):
            batch.append(key[len(head) :])
            if len(batch) >= 500:
                flush()
        flush()
        return counts

    @_unavailable
    def list_user_tasks(self, user_id: str, page_size: int = 100, page_token: str = "") -> tuple[list[Task], str]:
        if not user_id:
            raise InvalidArgument("user_id is required", reason="MISSING_USER_ID", metadata={"field": "user_id"})
        page_size = max(1, min(page_size or 100, 1000))
        try:
            cursor = int(page_token) if page_token else 0
        except ValueError:
            raise InvalidArgument("bad page token", reason="BAD_PAGE_TOKEN", metadata={"field": "page_token"}) from None
        head = self._k("t", "")
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", head) + "*"
        skip = len(head.encode())
        wanted = user_id.encode()
        found: list[Task] = []
        # No index leads to a user's tasks in every state (as for purge_tasks): the task hashes are
        # scanned, and the page token is the SCAN cursor (0 again: the scan is complete).
        while True:
            cursor, keys = self._rb.scan(cursor, match=pattern, count=page_size)
            if keys:
                pipe = self._rb.pipeline(transaction=False)
                for key in keys:
                    pipe.hmget(key, "user", *_TASK_FIELDS)
                for key, row in zip(keys, pipe.execute(), strict=True):
                    if row[0] == wanted and row[1] is not None:  # not purged or expired meanwhile
                        found.append(self._task(key[skip:].decode(), row[1:]))
            if not cursor:
                return found, ""
            if len(found) >= page_size:
                return found, str(cursor)

    def close(self) -> None:
        self._r.close()
        self._rb.close()

    async def aclose(self) -> None:
        await self._arb.aclose()
        self.close()

    def drop_all(self) -> None:
        """Deletes every key under the prefix (tests)."""
        for key in self._r.scan_iter(match=f"{self.prefix}:*", count=1000):
            self._r.delete(key)
