-- pgTAP tests of the edge_worker migration against a real pgmq.
--
-- Runs in one transaction that is rolled back, so queues, workers and dead
-- letters made here never outlive the test. `./build.sh test` runs it with
-- psql; `supabase test db` runs it the same way.
begin;

create extension if not exists pgtap;

select plan(75);

-- Fixtures: a queue with eight messages, read once so each has read_ct 1.
-- Message 6 gets an enqueued_at of its own, to see it kept when it is
-- dead-lettered.
do $$
begin
  perform pgmq.create('ew_test');
  perform pgmq.send('ew_test', jsonb_build_object('n', n)) from generate_series(1, 8) as n;
  perform pgmq.read('ew_test', 30, 8);
  update pgmq.q_ew_test set enqueued_at = '2020-01-02 03:04:05+00' where msg_id = 6;
end;
$$;

------------------------------------------------------------------------------
-- Schema
------------------------------------------------------------------------------

select has_table('edge_worker', 'workers', 'workers table exists');
select has_table('edge_worker', 'attempt_errors', 'attempt_errors table exists');
select has_table('edge_worker', 'dead_letters', 'dead_letters table exists');
select has_index('edge_worker', 'attempt_errors', 'attempt_errors_queue_msg_idx',
  array['queue_name', 'msg_id'], 'attempt_errors is indexed by (queue_name, msg_id)');
select has_view('edge_worker', 'active_workers', 'active_workers view exists');
select has_view('edge_worker', 'stale_workers', 'stale_workers view exists');
select has_view('edge_worker', 'queue_stats', 'queue_stats view exists');

------------------------------------------------------------------------------
-- archive
------------------------------------------------------------------------------

select is_empty(
  $$ select * from edge_worker.archive('ew_test', array[1]::bigint[], array[0]) $$,
  'archive with a stale read_ct archives nothing');
select results_eq(
  $$ select read_ct from pgmq.q_ew_test where msg_id = 1 $$,
  array[1],
  'archive with a stale read_ct leaves the message in the queue untouched');
select results_eq(
  $$ select * from edge_worker.archive('ew_test', array[1, 2]::bigint[], array[1, 0]) $$,
  array[1::bigint],
  'archive returns only the ids whose read_ct still matches');
select results_eq(
  $$ select msg_id, read_ct, message from pgmq.a_ew_test $$,
  $$ values (1::bigint, 1, '{"n": 1}'::jsonb) $$,
  'archive moves the message with its read_ct and payload to the archive table');
select is_empty(
  $$ select * from pgmq.q_ew_test where msg_id = 1 $$,
  'archive removes the message from the queue table');
select is(
  edge_worker.optional_columns('ew_test'), array['headers', 'last_read_at'],
  'optional_columns finds the columns pgmq 1.11 adds to both tables');
select ok(
  (select last_read_at is not null from pgmq.a_ew_test where msg_id = 1),
  'archive carries over the columns newer pgmq versions add');
select is_empty(
  $$ select * from edge_worker.archive('ew_test', array[1]::bigint[], array[1]) $$,
  'archiving the same claim twice changes nothing the second time');
select is_empty(
  $$ select * from edge_worker.archive('ew_test', '{}'::bigint[], '{}'::int[]) $$,
  'archive of an empty batch is a no-op');

------------------------------------------------------------------------------
-- release
------------------------------------------------------------------------------

select results_eq(
  $$ select * from edge_worker.release('ew_test', array[2]::bigint[], array[1]) $$,
  array[2::bigint],
  'release returns the released id');
select results_eq(
  $$ select read_ct, vt <= clock_timestamp() from pgmq.q_ew_test where msg_id = 2 $$,
  $$ values (0, true) $$,
  'release decrements read_ct and makes the message visible now');
select is_empty(
  $$ select * from edge_worker.release('ew_test', array[2]::bigint[], array[1]) $$,
  'release with a stale read_ct changes nothing');
select results_eq(
  $$ select * from edge_worker.release('ew_test', array[2]::bigint[], array[0]) $$,
  array[2::bigint],
  'release of a message whose read_ct is already 0 still applies');
select results_eq(
  $$ select read_ct from pgmq.q_ew_test where msg_id = 2 $$,
  array[0],
  'release never takes read_ct below 0');

------------------------------------------------------------------------------
-- extend
------------------------------------------------------------------------------

select results_eq(
  $$ select * from edge_worker.extend('ew_test', array[3]::bigint[], array[1], 600) $$,
  array[3::bigint],
  'extend returns the extended id');
select ok(
  (select vt between clock_timestamp() + interval '590 seconds'
    and clock_timestamp() + interval '600 seconds'
   from pgmq.q_ew_test where msg_id = 3),
  'extend sets vt to now plus the given seconds');
select is_empty(
  $$ select * from edge_worker.extend('ew_test', array[4]::bigint[], array[2], 600) $$,
  'extend with a stale read_ct changes nothing');
select ok(
  (select vt < clock_timestamp() + interval '31 seconds' from pgmq.q_ew_test where msg_id = 4),
  'extend with a stale read_ct leaves vt as it was');

------------------------------------------------------------------------------
-- retry
------------------------------------------------------------------------------

select results_eq(
  $$ select * from edge_worker.retry('ew_test', array[4, 5]::bigint[], array[1, 1],
       array[120, 0], array['TypeError', 'Error'], array['boom', 'bang'],
       '00000000-0000-4000-8000-000000000001') order by 1 $$,
  array[4::bigint, 5::bigint],
  'retry returns every id it rescheduled');
select ok(
  (select vt between clock_timestamp() + interval '110 seconds'
    and clock_timestamp() + interval '120 seconds'
   from pgmq.q_ew_test where msg_id = 4),
  'retry sets vt to now plus the message''s own delay');
select results_eq(
  $$ select read_ct, vt <= clock_timestamp() from pgmq.q_ew_test where msg_id = 5 $$,
  $$ values (1, true) $$,
  'retry with delay 0 makes the message visible at once and keeps read_ct');
select results_eq(
  $$ select msg_id, attempt, error_name, error_message, worker_id
     from edge_worker.attempt_errors where queue_name = 'ew_test' order by msg_id $$,
  $$ values (4::bigint, 1, 'TypeError', 'boom', '00000000-0000-4000-8000-000000000001'::uuid),
            (5::bigint, 1, 'Error', 'bang', '00000000-0000-4000-8000-000000000001'::uuid) $$,
  'retry records one attempt error per message, attempt = read_ct');
select is_empty(
  $$ select * from edge_worker.retry('ew_test', array[6]::bigint[], array[3], array[1],
       array['Error'], array['late'], null) $$,
  'retry with a stale read_ct changes nothing');
select is(
  (select count(*) from edge_worker.attempt_errors where queue_name = 'ew_test' and msg_id = 6),
  0::bigint,
  'retry with a stale read_ct records no error');
select is_empty(
  $$ select * from edge_worker.retry('ew_test', array[4]::bigint[], array[1],
       array[1], array['TypeError'], array['boom again'], null) $$,
  'a retry sent again for a recorded attempt changes nothing');
select ok(
  (select vt > clock_timestamp() + interval '100 seconds' from pgmq.q_ew_test where msg_id = 4),
  'a retry sent again keeps the delay the first one set');
select is(
  (select count(*) from edge_worker.attempt_errors where queue_name = 'ew_test' and msg_id = 4),
  1::bigint,
  'a retry sent again records no second error');
select is_empty(
  $$ select * from edge_worker.extend('ew_test', array[4]::bigint[], array[1], 5) $$,
  'an extension arriving after the retry does not cut the delay short');
select throws_ok(
  $$ select * from edge_worker.retry('ew_test', array[6]::bigint[], array[1], array[-1],
       array['Error'], array['x'], null) $$,
  '22023', null,
  'retry rejects a negative delay as invalid_parameter_value');

------------------------------------------------------------------------------
-- dead_letter
------------------------------------------------------------------------------

select results_eq(
  $$ select * from edge_worker.dead_letter('ew_test', array[6, 7]::bigint[], array[1, 9],
       array['RangeError', 'Error'], array['gave up', 'stale'],
       '00000000-0000-4000-8000-000000000002') $$,
  array[6::bigint],
  'dead_letter returns only the ids whose read_ct still matches');
select is_empty(
  $$ select * from pgmq.q_ew_test where msg_id = 6 $$,
  'dead_letter removes the message from the queue');
select results_eq(
  $$ select read_ct, message, enqueued_at, error_name, error_message
     from edge_worker.dead_letters where queue_name = 'ew_test' and msg_id = 6 $$,
  $$ values (1, '{"n": 6}'::jsonb, '2020-01-02 03:04:05+00'::timestamptz, 'RangeError',
       'gave up') $$,
  'dead_letter keeps payload, enqueued_at, read count and final error');
select results_eq(
  $$ select attempt, error_name from edge_worker.attempt_errors where queue_name = 'ew_test' and msg_id = 6 $$,
  $$ values (1, 'RangeError') $$,
  'dead_letter records the final attempt error');
select results_eq(
  $$ select read_ct from pgmq.q_ew_test where msg_id = 7 $$,
  array[1],
  'dead_letter with a stale read_ct leaves the message in the queue');
select results_eq(
  $$ select msg_id, jsonb_array_length(attempts) from edge_worker.list_dead_letters('ew_test') $$,
  $$ values (6::bigint, 1) $$,
  'list_dead_letters shows the dead letter with its attempt history');

------------------------------------------------------------------------------
-- Redrive and purge
------------------------------------------------------------------------------

create temporary table redriven as
select new_id from edge_worker.redrive_dead_letters('ew_test', array[6]::bigint[]) as new_id;

select is((select count(*) from redriven), 1::bigint, 'redrive returns one new id per dead letter');
select results_eq(
  $$ select q.read_ct, q.message from pgmq.q_ew_test as q join redriven as r on r.new_id = q.msg_id $$,
  $$ values (0, '{"n": 6}'::jsonb) $$,
  'redrive sends the payload back as a fresh message with read_ct 0');
select is_empty(
  $$ select * from edge_worker.dead_letters where queue_name = 'ew_test' $$,
  'redrive removes the dead letter');

do $$
begin
  perform edge_worker.dead_letter('ew_test', array[7]::bigint[], array[1],
    array['Error'], array['again'], null);
end;
$$;
select is(
  edge_worker.purge_dead_letters('ew_test', interval '1 hour'), 0::bigint,
  'purge with older_than keeps recent dead letters');
select is(
  edge_worker.purge_dead_letters('ew_test'), 1::bigint,
  'purge without older_than deletes every dead letter of the queue');
select is(
  (select count(*) from edge_worker.attempt_errors where queue_name = 'ew_test' and msg_id = 7), 0::bigint,
  'purge deletes the attempt history of the purged dead letters');

------------------------------------------------------------------------------
-- Input validation
------------------------------------------------------------------------------

select throws_ok(
  $$ select * from edge_worker.archive('ew_test', array[1, 2]::bigint[], array[1]) $$,
  '22023', null,
  'parallel arrays of different lengths are rejected as invalid_parameter_value');
select throws_ok(
  $$ select * from edge_worker.archive('ew_test', null, array[1]) $$,
  '22023', null,
  'a null batch array is rejected');
select throws_ok(
  $$ select * from edge_worker.archive(null, array[1]::bigint[], array[1]) $$,
  '22023', null,
  'a null queue name is rejected');
select throws_ok(
  $$ select * from edge_worker.dead_letter(null, array[1]::bigint[], array[1],
       array['Error'], array['x'], null) $$,
  '22023', null,
  'dead_letter rejects a null queue name before touching any table');
select throws_ok(
  $$ select * from edge_worker.archive('Bad-Name', array[1]::bigint[], array[1]) $$,
  '22023', null,
  'a queue name outside [a-z_][a-z0-9_]* is rejected');
select throws_ok(
  format($$ select * from edge_worker.archive(%L, array[1]::bigint[], array[1]) $$, repeat('q', 48)),
  '22023', null,
  'a queue name longer than 47 characters is rejected');

------------------------------------------------------------------------------
-- Ids above 2^53 survive every operation exactly
------------------------------------------------------------------------------

do $$
begin
  perform pgmq.create('ew_big');
  perform setval(pg_get_serial_sequence('pgmq.q_ew_big', 'msg_id'), 9007199254740992);
  perform pgmq.send('ew_big', '{"big": true}'::jsonb) from generate_series(1, 2);
  perform pgmq.read('ew_big', 30, 2);
end;
$$;

select results_eq(
  $$ select msg_id::text from pgmq.q_ew_big order by msg_id $$,
  array['9007199254740993', '9007199254740994'],
  'the queue hands out ids above 2^53');
select results_eq(
  $$ select (edge_worker.extend('ew_big', array[9007199254740993]::bigint[], array[1], 60))::text $$,
  array['9007199254740993'],
  'extend returns an id above 2^53 exactly');
select results_eq(
  $$ select (edge_worker.archive('ew_big', array[9007199254740993]::bigint[], array[1]))::text $$,
  array['9007199254740993'],
  'archive returns an id above 2^53 exactly');
select results_eq(
  $$ select msg_id::text from pgmq.a_ew_big $$,
  array['9007199254740993'],
  'the archived row keeps the id above 2^53');
select results_eq(
  $$ select (edge_worker.dead_letter('ew_big', array[9007199254740994]::bigint[], array[1],
       array['Error'], array['x'], null))::text $$,
  array['9007199254740994'],
  'dead_letter returns an id above 2^53 exactly');
select results_eq(
  $$ select msg_id::text from edge_worker.dead_letters where queue_name = 'ew_big' $$,
  array['9007199254740994'],
  'the dead letter keeps the id above 2^53');

------------------------------------------------------------------------------
-- Queue tables shaped as in pgmq 1.4 (no headers, no last_read_at)
------------------------------------------------------------------------------

-- pgmq 1.4 cannot be installed here, so a 1.11 queue loses the columns 1.4
-- lacks; messages are inserted directly, as already read once.
do $$
begin
  perform pgmq.create('ew_old');
  alter table pgmq.q_ew_old drop column headers, drop column last_read_at;
  alter table pgmq.a_ew_old drop column headers, drop column last_read_at;
  insert into pgmq.q_ew_old (read_ct, vt, message)
  select 1, clock_timestamp() + interval '30 seconds', jsonb_build_object('n', n)
  from generate_series(1, 2) as n;
end;
$$;

select is(
  edge_worker.optional_columns('ew_old'), '{}'::text[],
  'optional_columns finds none of the newer columns on a 1.4-shaped queue');
select results_eq(
  $$ select * from edge_worker.archive('ew_old', array[1]::bigint[], array[1]) $$,
  array[1::bigint],
  'archive works on a 1.4-shaped queue');
select results_eq(
  $$ select msg_id, message from pgmq.a_ew_old $$,
  $$ values (1::bigint, '{"n": 1}'::jsonb) $$,
  'archive moves the message of a 1.4-shaped queue to its archive table');
select results_eq(
  $$ select * from edge_worker.dead_letter('ew_old', array[2]::bigint[], array[1],
       array['Error'], array['x'], null) $$,
  array[2::bigint],
  'dead_letter works on a 1.4-shaped queue');
select results_eq(
  $$ select message, headers from edge_worker.dead_letters where queue_name = 'ew_old' $$,
  $$ values ('{"n": 2}'::jsonb, null::jsonb) $$,
  'dead_letter of a 1.4-shaped queue keeps the payload and stores no headers');

------------------------------------------------------------------------------
-- Error text is clipped
------------------------------------------------------------------------------

do $$
begin
  perform edge_worker.retry('ew_test', array[8]::bigint[], array[1], array[0],
    array['Error'], array[repeat('x', 2 * 1024 * 1024)], null);
end;
$$;
select ok(
  (select octet_length(error_message) = 65536 and error_message like 'xxx%[truncated]'
   from edge_worker.attempt_errors where queue_name = 'ew_test' and msg_id = 8),
  'a 2 MB error message is stored cut to 64 KiB, marked as truncated');
select ok(
  octet_length(edge_worker.clip_text(repeat('é', 1024 * 1024), 65536)) <= 65536,
  'clipping multi-byte text stays within the byte limit');

------------------------------------------------------------------------------
-- Workers and views
------------------------------------------------------------------------------

do $$
begin
  perform edge_worker.register_worker(
    '00000000-0000-4000-8000-00000000000a', 'ew_test', 'pgtap-worker');
  perform edge_worker.register_worker(
    '00000000-0000-4000-8000-00000000000a', 'ew_test', 'pgtap-worker');
end;
$$;
select is(
  edge_worker.heartbeat('00000000-0000-4000-8000-00000000000a', 3, 1, 0, 4, 2, 'last one'),
  false,
  'heartbeat of a running worker answers not deprecated (and register is idempotent)');
select results_eq(
  $$ select succeeded, failed, dead_lettered, stale, in_flight, last_error
     from edge_worker.active_workers where worker_id = '00000000-0000-4000-8000-00000000000a' $$,
  $$ values (3::bigint, 1::bigint, 0::bigint, 4::bigint, 2, 'last one') $$,
  'a heartbeating worker is active with its counters');
select is(
  edge_worker.heartbeat('00000000-0000-4000-8000-0000000000ff', 0, 0, 0, 0, 0, null),
  false,
  'heartbeat of an unknown worker answers not deprecated');
select results_eq(
  $$ select * from edge_worker.deprecate_workers('pgtap-worker') $$,
  array['00000000-0000-4000-8000-00000000000a'::uuid],
  'deprecate_workers marks the running workers of the function');
select is(
  edge_worker.heartbeat('00000000-0000-4000-8000-00000000000a', 3, 1, 0, 4, 0, null),
  true,
  'heartbeat of a deprecated worker answers deprecated');
update edge_worker.workers set last_heartbeat_at = clock_timestamp() - interval '1 minute'
where worker_id = '00000000-0000-4000-8000-00000000000a';
select results_eq(
  $$ select worker_id from edge_worker.stale_workers where function_name = 'pgtap-worker' $$,
  array['00000000-0000-4000-8000-00000000000a'::uuid],
  'a worker without a heartbeat for longer than the timeout is stale');
do $$
begin
  perform edge_worker.stop_worker('00000000-0000-4000-8000-00000000000a');
end;
$$;
select is_empty(
  $$ select worker_id from edge_worker.stale_workers where function_name = 'pgtap-worker'
     union all
     select worker_id from edge_worker.active_workers where function_name = 'pgtap-worker' $$,
  'a stopped worker is neither active nor stale');

select results_eq(
  $$ select depth, visible, in_flight, dead_letters from edge_worker.queue_stats
     where queue_name = 'ew_test' $$,
  $$ values (6::bigint, 4::bigint, 2::bigint, 0::bigint) $$,
  'queue_stats counts depth, visible, in-flight and dead letters per queue');

select * from finish();
rollback;
