-- Edge Worker: the database side of the queue worker.
--
-- What lives here: the worker registry (heartbeats, counters, the
-- deprecation flag), the history of failed attempts, the dead-letter record,
-- and the fenced batch operations the worker calls instead of pgmq's own
-- archive, set_vt and delete. docs/boundary.md is the contract these
-- functions implement; docs/sql.md explains the schema.
--
-- Compatibility: hosted Supabase ships pgmq 1.4.4 or 1.5.1, local tests run
-- 1.11.1. The only pgmq function called here is pgmq.send; everything else
-- is plain SQL on pgmq.meta, pgmq.q_<queue> and pgmq.a_<queue>, using the
-- columns all three versions have (msg_id, read_ct, enqueued_at, vt, message,
-- and archived_at in the archive). Columns that newer versions add (headers
-- since 1.5, last_read_at since 1.10) are carried along only when present.
--
-- Re-runnable: every statement is idempotent (if not exists, or replace),
-- because build.sh applies all migrations on every run.

create extension if not exists pgmq;

create schema if not exists edge_worker;

-- No privileges are granted on this schema: only its owner (postgres on
-- Supabase, the role the worker connects as) can reach it. Nothing here is
-- meant for the anon or authenticated API roles.
comment on schema edge_worker is
  'Edge Worker: worker registry, attempt errors, dead letters and the fenced '
  'batch operations on pgmq queues.';

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

-- One row per worker (one per Edge Function isolate). Heartbeats keep it
-- current so operators and the respawn safety net can tell live workers from
-- dead ones; the counters are the worker's own running totals.
create table if not exists edge_worker.workers (
  worker_id uuid primary key,
  queue_name text not null,
  function_name text not null,
  started_at timestamptz not null default clock_timestamp(),
  last_heartbeat_at timestamptz not null default clock_timestamp(),
  stopped_at timestamptz,
  deprecated_at timestamptz,
  succeeded bigint not null default 0,
  failed bigint not null default 0,
  dead_lettered bigint not null default 0,
  -- Writes fenced out because another worker re-read the message: a sign
  -- that leases lapse.
  stale bigint not null default 0,
  in_flight int not null default 0,
  last_error text
);

-- build.sh re-applies this file on every run, also to databases created by
-- an earlier version of it that had no stale counter yet.
alter table edge_worker.workers
  add column if not exists stale bigint not null default 0;

comment on table edge_worker.workers is
  'One row per worker isolate. stopped_at is set on a clean stop; '
  'deprecated_at asks the worker to retire at its next heartbeat.';

-- The views and the respawn check look for workers of one function that are
-- not stopped, by heartbeat age; stopped rows are history and need no index.
create index if not exists workers_live_by_function_idx
  on edge_worker.workers (function_name, last_heartbeat_at)
  where stopped_at is null;

-- A failed attempt is data: one row per failure, written in the same
-- statement that schedules the retry or dead-letters the message, so an
-- operator can read a message's whole history.
create table if not exists edge_worker.attempt_errors (
  id bigint generated always as identity primary key,
  queue_name text not null,
  msg_id bigint not null,
  attempt int not null,
  failed_at timestamptz not null default clock_timestamp(),
  error_name text,
  error_message text,
  worker_id uuid
);

comment on table edge_worker.attempt_errors is
  'One row per failed attempt; attempt is the read count the message had '
  'when it failed (1 for the first attempt).';

-- History is always looked up per message.
create index if not exists attempt_errors_queue_msg_idx
  on edge_worker.attempt_errors (queue_name, msg_id);

-- Messages that used up their retries. They leave the queue table (so they
-- are never read again) and keep their payload here until an operator
-- redrives or purges them. headers is null on pgmq before 1.5.
create table if not exists edge_worker.dead_letters (
  queue_name text not null,
  msg_id bigint not null,
  read_ct int not null,
  enqueued_at timestamptz not null,
  dead_lettered_at timestamptz not null default clock_timestamp(),
  message jsonb,
  headers jsonb,
  error_name text,
  error_message text,
  primary key (queue_name, msg_id)
);

comment on table edge_worker.dead_letters is
  'Messages that failed their last allowed attempt, with payload and final '
  'error. The full history is in attempt_errors under the same msg_id.';

------------------------------------------------------------------------------
-- Internal helpers
------------------------------------------------------------------------------

-- Queue names reach dynamic SQL, so they are checked before any table name
-- is built from them. The rule matches the config validation in the worker
-- (docs/configuration.md) and pgmq's own limit of 47 characters, which
-- keeps every table pgmq derives from the name within 63 bytes.
create or replace function edge_worker.check_queue_name(queue_name text)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if queue_name is null
    or length(queue_name) > 47
    or queue_name !~ '^[a-z_][a-z0-9_]*$'
  then
    raise exception 'invalid queue name %', coalesce(quote_literal(queue_name), 'null')
      using errcode = 'invalid_parameter_value',
        hint = 'allowed: 1 to 47 characters of a-z, 0-9 and _, not starting with a digit';
  end if;
end;
$$;

comment on function edge_worker.check_queue_name(text) is
  'Raises invalid_parameter_value (22023) unless the name is safe to turn '
  'into pgmq.q_<name> and pgmq.a_<name>.';

-- Batch arguments are parallel arrays. unnest() would silently pad a short
-- array with nulls, so a length mismatch is an error instead.
create or replace function edge_worker.check_batch(
  queue_name text,
  variadic lengths int[]
)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  perform edge_worker.check_queue_name(queue_name);
  if array_position(lengths, null) is not null
    or (select count(distinct n) from unnest(lengths) as n) > 1
  then
    raise exception 'batch arrays of lengths % differ', lengths
      using errcode = 'invalid_parameter_value',
        hint = 'allowed: non-null arrays with one entry per message';
  end if;
end;
$$;

comment on function edge_worker.check_batch(text, int[]) is
  'Validates the queue name and that all parallel batch arrays (given by '
  'their cardinality) are non-null and of equal length.';

-- Error text comes from user handlers and can be any size. The shim strips
-- what Postgres cannot store (\u0000); this is the last line of defence
-- against huge values: cut to max_bytes of UTF-8, on a character boundary,
-- ending with a marker so a reader knows text is missing.
create or replace function edge_worker.clip_text(value text, max_bytes int)
returns text
language plpgsql
immutable
strict
set search_path = ''
as $$
declare
  marker constant text := ' [truncated]';
  budget int := max_bytes - octet_length(marker);
  clipped text;
  excess int;
begin
  if octet_length(value) <= max_bytes then
    return value;
  end if;

  -- A character is at least one byte: keeping `budget` characters and then
  -- dropping one character per excess byte always lands within the budget.
  clipped := left(value, budget);
  excess := octet_length(clipped) - budget;
  if excess > 0 then
    clipped := left(clipped, length(clipped) - excess);
  end if;

  return clipped || marker;
end;
$$;

comment on function edge_worker.clip_text(text, int) is
  'Returns value unchanged if it fits in max_bytes, else its longest prefix '
  'that fits together with the suffix " [truncated]".';

-- Newer pgmq versions add columns to the queue and archive tables. Moving a
-- message must keep them, but naming them would fail on older versions, so
-- the batch functions ask which of them this queue's tables have.
create or replace function edge_worker.optional_columns(queue_name text)
returns text[]
language sql
stable
set search_path = ''
as $$
  select coalesce(array_agg(candidate order by candidate), '{}')
  from unnest(array['headers', 'last_read_at']) as candidate
  where (
    select count(*)
    from pg_catalog.pg_attribute
    where attrelid in (
        to_regclass(format('pgmq.%I', 'q_' || queue_name)),
        to_regclass(format('pgmq.%I', 'a_' || queue_name))
      )
      and attname = candidate
      and not attisdropped
  ) = 2;
$$;

comment on function edge_worker.optional_columns(text) is
  'Which of the columns added after pgmq 1.4 (headers, last_read_at) exist '
  'in both pgmq.q_<queue> and pgmq.a_<queue>.';

------------------------------------------------------------------------------
-- Fenced batch operations (docs/boundary.md, "SQL functions")
--
-- Shared shape: the claimed (msg_id, read_ct) pairs are unnested, matched
-- against the queue table, and the matching rows are locked in msg_id order
-- (FOR UPDATE in a materialized CTE, so the lock order is the sort order and
-- two batches never wait on each other in a cycle). A row whose read_ct moved
-- on since the claim (another worker read it after the lease expired) does
-- not match: it is left alone and its id is missing from the result, which
-- the worker reports as stale. pgmq.read locks with SKIP LOCKED, so a reader
-- never waits behind these functions. Time is clock_timestamp(), as in pgmq.
------------------------------------------------------------------------------

-- An attempt is closed once its failure is recorded: the retry that
-- recorded it already chose when the message comes back. A retry re-sent
-- after its answer was lost, or a lease extension that arrives after the
-- retry, would otherwise still match the fence (a retry leaves read_ct as
-- it is) and restart or cut short the delay. Errors of an earlier message
-- that had the same id (the queue was dropped and created again) predate
-- this message's enqueued_at and do not count.
create or replace function edge_worker.attempt_closed(
  queue_name text,
  msg_id bigint,
  read_ct int,
  enqueued_at timestamptz
)
returns boolean
language sql
stable
set search_path = ''
as $$
  select exists (
    select
    from edge_worker.attempt_errors as e
    where e.queue_name = attempt_closed.queue_name
      and e.msg_id = attempt_closed.msg_id
      and e.attempt = attempt_closed.read_ct
      and e.failed_at >= attempt_closed.enqueued_at
  );
$$;

comment on function edge_worker.attempt_closed(text, bigint, int, timestamptz) is
  'True once the failure of this attempt (msg_id at read_ct) is recorded; '
  'retry and extend then leave the message alone.';

-- Success: move the message to the archive table, as pgmq.archive does, but
-- only if this worker's claim is still the current one.
create or replace function edge_worker.archive(
  queue_name text,
  msg_ids bigint[],
  read_cts int[]
)
returns setof bigint
language plpgsql
set search_path = ''
as $$
declare
  extra text;
begin
  perform edge_worker.check_batch(
    queue_name, cardinality(msg_ids), cardinality(read_cts));
  extra := (
    select coalesce(string_agg(format(', %I', col), ''), '')
    from unnest(edge_worker.optional_columns(queue_name)) as col
  );

  return query execute format(
    $sql$
    with claimed as (
      select distinct c.msg_id, c.read_ct
      from unnest($1::bigint[], $2::int[]) as c(msg_id, read_ct)
    ),
    locked as materialized (
      select q.msg_id
      from pgmq.%1$I as q
      join claimed as c on c.msg_id = q.msg_id and c.read_ct = q.read_ct
      order by q.msg_id
      for update of q
    ),
    moved as (
      delete from pgmq.%1$I as q
      using locked as l
      where q.msg_id = l.msg_id
      returning q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message %3$s
    )
    insert into pgmq.%2$I (msg_id, read_ct, enqueued_at, vt, message %3$s)
    select msg_id, read_ct, enqueued_at, vt, message %3$s
    from moved
    returning msg_id
    $sql$,
    'q_' || queue_name, 'a_' || queue_name, extra)
  using msg_ids, read_cts;
end;
$$;

comment on function edge_worker.archive(text, bigint[], int[]) is
  'Archives each message whose read_ct still equals the claimed one; '
  'returns the ids archived.';

-- Failure with retries left: the message becomes visible again after the
-- policy's delay, and the failure is recorded. read_ct is not touched: the
-- next read increments it, so it keeps counting attempts.
create or replace function edge_worker.retry(
  queue_name text,
  msg_ids bigint[],
  read_cts int[],
  delays_s int[],
  error_names text[],
  error_messages text[],
  worker_id uuid
)
returns setof bigint
language plpgsql
set search_path = ''
as $$
begin
  perform edge_worker.check_batch(
    queue_name, cardinality(msg_ids), cardinality(read_cts),
    cardinality(delays_s), cardinality(error_names),
    cardinality(error_messages));
  if exists (select from unnest(delays_s) as d where d is null or d < 0) then
    raise exception 'invalid retry delays %', delays_s
      using errcode = 'invalid_parameter_value',
        hint = 'allowed: whole seconds, 0 or more';
  end if;

  return query execute format(
    $sql$
    with claimed as (
      select distinct on (c.msg_id, c.read_ct) c.*
      from unnest($1::bigint[], $2::int[], $3::int[], $4::text[], $5::text[])
        as c(msg_id, read_ct, delay_s, error_name, error_message)
      order by c.msg_id, c.read_ct
    ),
    locked as materialized (
      select q.msg_id, q.read_ct, c.delay_s, c.error_name, c.error_message
      from pgmq.%1$I as q
      join claimed as c on c.msg_id = q.msg_id and c.read_ct = q.read_ct
      where not edge_worker.attempt_closed($6, q.msg_id, q.read_ct, q.enqueued_at)
      order by q.msg_id
      for update of q
    ),
    delayed as (
      update pgmq.%1$I as q
      set vt = clock_timestamp() + make_interval(secs => l.delay_s)
      from locked as l
      where q.msg_id = l.msg_id
      returning q.msg_id
    ),
    recorded as (
      insert into edge_worker.attempt_errors
        (queue_name, msg_id, attempt, error_name, error_message, worker_id)
      select $6, l.msg_id, l.read_ct,
        edge_worker.clip_text(l.error_name, 1024),
        edge_worker.clip_text(l.error_message, 65536),
        $7
      from locked as l
    )
    select msg_id from delayed
    $sql$,
    'q_' || queue_name)
  using msg_ids, read_cts, delays_s, error_names, error_messages,
    queue_name, worker_id;
end;
$$;

comment on function edge_worker.retry(
  text, bigint[], int[], int[], text[], text[], uuid) is
  'Makes each still-claimed message visible again after its delay (seconds) '
  'and records its error as attempt read_ct; returns the ids retried.';

-- Failure with no retries left: record the error, take the message out of
-- the queue and keep it, payload included, in dead_letters.
create or replace function edge_worker.dead_letter(
  queue_name text,
  msg_ids bigint[],
  read_cts int[],
  error_names text[],
  error_messages text[],
  worker_id uuid
)
returns setof bigint
language plpgsql
set search_path = ''
as $$
declare
  headers_column text;
begin
  perform edge_worker.check_batch(
    queue_name, cardinality(msg_ids), cardinality(read_cts),
    cardinality(error_names), cardinality(error_messages));
  headers_column := case
    when 'headers' = any(edge_worker.optional_columns(queue_name))
      then 'q.headers'
    else 'null::jsonb'
  end;

  return query execute format(
    $sql$
    with claimed as (
      select distinct on (c.msg_id, c.read_ct) c.*
      from unnest($1::bigint[], $2::int[], $3::text[], $4::text[])
        as c(msg_id, read_ct, error_name, error_message)
      order by c.msg_id, c.read_ct
    ),
    locked as materialized (
      select q.msg_id, q.read_ct, q.enqueued_at, q.message,
        %2$s as headers,
        edge_worker.clip_text(c.error_name, 1024) as error_name,
        edge_worker.clip_text(c.error_message, 65536) as error_message
      from pgmq.%1$I as q
      join claimed as c on c.msg_id = q.msg_id and c.read_ct = q.read_ct
      order by q.msg_id
      for update of q
    ),
    removed as (
      delete from pgmq.%1$I as q
      using locked as l
      where q.msg_id = l.msg_id
      returning q.msg_id
    ),
    recorded as (
      insert into edge_worker.attempt_errors
        (queue_name, msg_id, attempt, error_name, error_message, worker_id)
      select $5, l.msg_id, l.read_ct, l.error_name, l.error_message, $6
      from locked as l
    ),
    -- A queue that was dropped and created again numbers its messages from
    -- 1 again; the newer dead letter then replaces the older one.
    kept as (
      insert into edge_worker.dead_letters as d
        (queue_name, msg_id, read_ct, enqueued_at, message, headers,
         error_name, error_message)
      select $5, l.msg_id, l.read_ct, l.enqueued_at, l.message, l.headers,
        l.error_name, l.error_message
      from locked as l
      on conflict (queue_name, msg_id) do update
      set read_ct = excluded.read_ct,
        enqueued_at = excluded.enqueued_at,
        dead_lettered_at = clock_timestamp(),
        message = excluded.message,
        headers = excluded.headers,
        error_name = excluded.error_name,
        error_message = excluded.error_message
    )
    select msg_id from removed
    $sql$,
    'q_' || queue_name, headers_column)
  using msg_ids, read_cts, error_names, error_messages, queue_name, worker_id;
end;
$$;

comment on function edge_worker.dead_letter(
  text, bigint[], int[], text[], text[], uuid) is
  'Moves each still-claimed message from the queue to dead_letters and '
  'records its final error; returns the ids dead-lettered.';

-- Lease renewal for handlers that run long: push the visibility timeout out
-- again, only while this worker still holds the claim.
create or replace function edge_worker.extend(
  queue_name text,
  msg_ids bigint[],
  read_cts int[],
  vt_s int
)
returns setof bigint
language plpgsql
set search_path = ''
as $$
begin
  perform edge_worker.check_batch(
    queue_name, cardinality(msg_ids), cardinality(read_cts));
  if vt_s is null or vt_s < 0 then
    raise exception 'invalid visibility timeout %', coalesce(vt_s::text, 'null')
      using errcode = 'invalid_parameter_value',
        hint = 'allowed: whole seconds, 0 or more';
  end if;

  return query execute format(
    $sql$
    with claimed as (
      select distinct c.msg_id, c.read_ct
      from unnest($1::bigint[], $2::int[]) as c(msg_id, read_ct)
    ),
    locked as materialized (
      select q.msg_id
      from pgmq.%1$I as q
      join claimed as c on c.msg_id = q.msg_id and c.read_ct = q.read_ct
      where not edge_worker.attempt_closed($4, q.msg_id, q.read_ct, q.enqueued_at)
      order by q.msg_id
      for update of q
    )
    update pgmq.%1$I as q
    set vt = clock_timestamp() + make_interval(secs => $3)
    from locked as l
    where q.msg_id = l.msg_id
    returning q.msg_id
    $sql$,
    'q_' || queue_name)
  using msg_ids, read_cts, vt_s, queue_name;
end;
$$;

comment on function edge_worker.extend(text, bigint[], int[], int) is
  'Sets vt to now + vt_s seconds for each still-claimed message; returns the '
  'ids extended.';

-- Hand-back on shutdown of messages that were claimed but never started:
-- visible at once, and the read that claimed them is taken back so that a
-- release does not use up an attempt. The caller gives up its claim: after
-- a release it must not complete the message.
create or replace function edge_worker.release(
  queue_name text,
  msg_ids bigint[],
  read_cts int[]
)
returns setof bigint
language plpgsql
set search_path = ''
as $$
begin
  perform edge_worker.check_batch(
    queue_name, cardinality(msg_ids), cardinality(read_cts));

  return query execute format(
    $sql$
    with claimed as (
      select distinct c.msg_id, c.read_ct
      from unnest($1::bigint[], $2::int[]) as c(msg_id, read_ct)
    ),
    locked as materialized (
      select q.msg_id
      from pgmq.%1$I as q
      join claimed as c on c.msg_id = q.msg_id and c.read_ct = q.read_ct
      order by q.msg_id
      for update of q
    )
    update pgmq.%1$I as q
    set vt = clock_timestamp(),
      read_ct = greatest(q.read_ct - 1, 0)
    from locked as l
    where q.msg_id = l.msg_id
    returning q.msg_id
    $sql$,
    'q_' || queue_name)
  using msg_ids, read_cts;
end;
$$;

comment on function edge_worker.release(text, bigint[], int[]) is
  'Makes each still-claimed message visible now and decrements its read_ct '
  '(never below 0); returns the ids released.';

------------------------------------------------------------------------------
-- Worker registry
------------------------------------------------------------------------------

-- Called once at start. A retry after a dropped connection may find the row
-- already there; that counts as registered.
create or replace function edge_worker.register_worker(
  worker_id uuid,
  queue_name text,
  function_name text
)
returns void
language plpgsql
set search_path = ''
as $$
begin
  perform edge_worker.check_queue_name(queue_name);

  insert into edge_worker.workers as w (worker_id, queue_name, function_name)
  values (worker_id, queue_name, function_name)
  on conflict on constraint workers_pkey do update
  set last_heartbeat_at = clock_timestamp();
end;
$$;

comment on function edge_worker.register_worker(uuid, text, text) is
  'Inserts the worker row (idempotent).';

-- Periodic liveness and counters; the answer tells the worker whether an
-- operator (or a newer deployment) asked it to retire.
create or replace function edge_worker.heartbeat(
  worker_id uuid,
  succeeded bigint,
  failed bigint,
  dead_lettered bigint,
  stale bigint,
  in_flight int,
  last_error text
)
returns boolean
language sql
set search_path = ''
as $$
  with beat as (
    update edge_worker.workers as w
    set last_heartbeat_at = clock_timestamp(),
      succeeded = heartbeat.succeeded,
      failed = heartbeat.failed,
      dead_lettered = heartbeat.dead_lettered,
      stale = heartbeat.stale,
      in_flight = heartbeat.in_flight,
      last_error = edge_worker.clip_text(heartbeat.last_error, 65536)
    where w.worker_id = heartbeat.worker_id
    returning w.deprecated_at
  )
  -- An unknown worker (its row purged) is not asked to retire.
  select coalesce((select deprecated_at is not null from beat), false);
$$;

comment on function edge_worker.heartbeat(uuid, bigint, bigint, bigint, bigint, int, text) is
  'Stores the worker''s counters and last_heartbeat_at; returns true when '
  'deprecated_at is set, asking the worker to retire.';

-- Clean stop: the row stays as history, marked so it is neither active nor
-- stale. Stopping twice keeps the first time.
create or replace function edge_worker.stop_worker(worker_id uuid)
returns void
language sql
set search_path = ''
as $$
  update edge_worker.workers as w
  set stopped_at = coalesce(w.stopped_at, clock_timestamp())
  where w.worker_id = stop_worker.worker_id;
$$;

comment on function edge_worker.stop_worker(uuid) is
  'Marks the worker stopped (idempotent).';

-- The operator's (or a deploy script's) way to retire a function's running
-- workers: each sees deprecated = true at its next heartbeat and hands over.
create or replace function edge_worker.deprecate_workers(function_name text)
returns setof uuid
language sql
set search_path = ''
as $$
  update edge_worker.workers as w
  set deprecated_at = clock_timestamp()
  where w.function_name = deprecate_workers.function_name
    and w.stopped_at is null
    and w.deprecated_at is null
  returning w.worker_id;
$$;

comment on function edge_worker.deprecate_workers(text) is
  'Asks every running worker of the function to retire; returns their ids.';

-- How long a worker may go without a heartbeat before it counts as gone:
-- three heartbeats at the longest interval we expect in practice (10 s).
create or replace function edge_worker.worker_timeout()
returns interval
language sql
immutable
set search_path = ''
as $$
  select interval '30 seconds';
$$;

comment on function edge_worker.worker_timeout() is
  'Heartbeat age after which a worker that did not stop counts as stale.';

------------------------------------------------------------------------------
-- Operator functions for dead letters
------------------------------------------------------------------------------

-- What failed and why, with every recorded attempt, oldest message first.
create or replace function edge_worker.list_dead_letters(queue_name text)
returns table (
  msg_id bigint,
  read_ct int,
  enqueued_at timestamptz,
  dead_lettered_at timestamptz,
  message jsonb,
  headers jsonb,
  error_name text,
  error_message text,
  attempts jsonb
)
language sql
stable
set search_path = ''
as $$
  select d.msg_id, d.read_ct, d.enqueued_at, d.dead_lettered_at, d.message,
    d.headers, d.error_name, d.error_message,
    coalesce((
      select jsonb_agg(jsonb_build_object(
          'attempt', e.attempt,
          'failed_at', e.failed_at,
          'error_name', e.error_name,
          'error_message', e.error_message,
          'worker_id', e.worker_id)
        order by e.id)
      from edge_worker.attempt_errors as e
      where e.queue_name = d.queue_name and e.msg_id = d.msg_id
    ), '[]'::jsonb)
  from edge_worker.dead_letters as d
  where d.queue_name = list_dead_letters.queue_name
  order by d.msg_id;
$$;

comment on function edge_worker.list_dead_letters(text) is
  'Dead letters of one queue with their attempt history (jsonb array).';

-- Send dead letters back to their queue as new messages (new msg_id, read
-- count 0, so the full retry budget applies again). The old id's history
-- stays in attempt_errors.
create or replace function edge_worker.redrive_dead_letters(
  queue_name text,
  msg_ids bigint[] default null
)
returns setof bigint
language plpgsql
set search_path = ''
as $$
declare
  dead record;
  new_id bigint;
begin
  perform edge_worker.check_queue_name(queue_name);

  for dead in
    select d.msg_id, d.message, d.headers
    from edge_worker.dead_letters as d
    where d.queue_name = redrive_dead_letters.queue_name
      and (redrive_dead_letters.msg_ids is null
        or d.msg_id = any(redrive_dead_letters.msg_ids))
    order by d.msg_id
    for update
  loop
    -- pgmq.send with headers exists from 1.5 on; on 1.4 headers is always
    -- null here, so that call is never reached.
    if dead.headers is null then
      new_id := pgmq.send(queue_name, dead.message);
    else
      new_id := pgmq.send(queue_name, dead.message, dead.headers);
    end if;

    delete from edge_worker.dead_letters as d
    where d.queue_name = redrive_dead_letters.queue_name
      and d.msg_id = dead.msg_id;

    return next new_id;
  end loop;
end;
$$;

comment on function edge_worker.redrive_dead_letters(text, bigint[]) is
  'Re-sends the given dead letters (all of the queue''s when msg_ids is '
  'null) as fresh messages; returns the new msg_ids in dead msg_id order.';

-- Forget dead letters (and their attempt history) for good.
create or replace function edge_worker.purge_dead_letters(
  queue_name text,
  older_than interval default null
)
returns bigint
language sql
set search_path = ''
as $$
  with purged as (
    delete from edge_worker.dead_letters as d
    where d.queue_name = purge_dead_letters.queue_name
      and (purge_dead_letters.older_than is null
        or d.dead_lettered_at < clock_timestamp() - purge_dead_letters.older_than)
    returning d.queue_name, d.msg_id
  ),
  history as (
    delete from edge_worker.attempt_errors as e
    using purged as p
    where e.queue_name = p.queue_name and e.msg_id = p.msg_id
  )
  select count(*) from purged;
$$;

comment on function edge_worker.purge_dead_letters(text, interval) is
  'Deletes the queue''s dead letters (only those dead-lettered longer ago '
  'than older_than, when given) and their attempt history; returns how many.';

------------------------------------------------------------------------------
-- Views for operators
------------------------------------------------------------------------------

-- Workers that are running: not stopped, heartbeat recent.
create or replace view edge_worker.active_workers as
select w.*
from edge_worker.workers as w
where w.stopped_at is null
  and w.last_heartbeat_at > clock_timestamp() - edge_worker.worker_timeout();

comment on view edge_worker.active_workers is
  'Workers not stopped whose last heartbeat is within worker_timeout().';

-- Workers that vanished without stopping (isolate killed, crash). Their
-- claimed messages come back when the leases expire; a function with only
-- stale workers needs a respawn.
create or replace view edge_worker.stale_workers as
select w.*
from edge_worker.workers as w
where w.stopped_at is null
  and w.last_heartbeat_at <= clock_timestamp() - edge_worker.worker_timeout();

comment on view edge_worker.stale_workers is
  'Workers not stopped whose last heartbeat is older than worker_timeout().';

-- Per-queue numbers. pgmq.metrics changed its result type across versions,
-- so this counts the queue tables directly; a view cannot run dynamic SQL,
-- hence the function behind it.
create or replace function edge_worker.collect_queue_stats()
returns table (
  queue_name text,
  depth bigint,
  visible bigint,
  in_flight bigint,
  oldest_msg_age_s double precision,
  dead_letters bigint
)
language plpgsql
stable
set search_path = ''
as $$
declare
  queue text;
begin
  for queue in
    select m.queue_name from pgmq.meta as m order by m.queue_name
  loop
    -- pgmq lower-cases the name when it builds table names.
    continue when to_regclass(format('pgmq.%I', lower('q_' || queue))) is null;

    return query execute format(
      $sql$
      select $1::text,
        count(*),
        count(*) filter (where q.vt <= clock_timestamp()),
        count(*) filter (where q.vt > clock_timestamp()),
        extract(epoch from clock_timestamp() - min(q.enqueued_at))::float8,
        (select count(*) from edge_worker.dead_letters as d
          where d.queue_name = $1)
      from pgmq.%I as q
      $sql$,
      lower('q_' || queue))
    using queue;
  end loop;
end;
$$;

comment on function edge_worker.collect_queue_stats() is
  'Counts every pgmq queue; backs the view edge_worker.queue_stats.';

create or replace view edge_worker.queue_stats as
select * from edge_worker.collect_queue_stats();

comment on view edge_worker.queue_stats is
  'Per queue: depth (messages in the queue table), visible (readable now), '
  'in_flight (leased or delayed, vt in the future), oldest_msg_age_s, and '
  'dead_letters.';
