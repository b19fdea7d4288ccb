//! Shared GCRA limits: the fleet's admissions for one key, all replicas together, conform to one
//! GCRA of burst `limit` and rate `limit` per minute — what `authz::rate_limit` gives one
//! replica today.
//!
//! **State in Redis** (one hash per key, one slot in a cluster): `level`, the budget in use in
//! nanoseconds (a request of a limit L costs `60 s / L`; the burst is 60 s whatever L is, so a
//! changed limit needs no reset: each request pays its own limit's price), draining at one
//! nanosecond per nanosecond of Redis time; `at`, when `level` was computed; and one field per
//! **lease** held by a replica: units reserved at a unit cost until an expiry. One Lua script
//! (`LEASE`) does everything atomically, on Redis's clock: drains `level`, turns expired leases
//! into spent budget, takes back the leases a replica returns (adding only the units it
//! spent), then grants units if `level + reserved + units × cost ≤ 60 s`.
//!
//! **Low limits** (below `lease_min_per_minute`): every check is that script with one unit
//! spent at once, so the fleet is exactly one GCRA.
//!
//! **High limits** are leased. A replica asks for `n` units (sized to its observed rate over
//! `lease_target`, at most `limit ÷ (8 × live replicas)`); Redis reserves them (they count
//! against the burst, and do not drain) and the replica spends them locally, without a round
//! trip, until `lease_ttl` after it *sent* the request. Half-way through a lease it asks for
//! the next one in the background; a spent or expired lease is returned with the count of
//! units spent from it, and only those are added to `level`, at the time Redis takes the return
//! (after the last of them was spent). A lease never returned (the replica died, the return was
//! lost) counts as wholly spent when Redis's reservation ends, `2 × lease_ttl` after it was
//! granted — after its replica stopped spending it.
//!
//! **The guarantee.** Whatever the replicas, rates and timing, as long as one Redis master holds
//! the key and its clock runs at the rate of real time: at every instant the budget Redis
//! counts (level + reservations) is at least the level of a single GCRA fed with the fleet's
//! actual admissions (a unit's admission instant is the local spend, or the script's run for a
//! low limit). Reserved units count in full until returned; a returned unit enters `level` at
//! or after its spend, so it drains no earlier than it would have; a spend never happens after
//! its lease's local deadline, which falls before Redis's reservation ends. Since Redis never
//! lets its count exceed 60 s, the fleet never admits more than one GCRA would: in any interval
//! of length `w`, at most `limit + w ÷ (60 s / limit)` requests, the same bound as a single
//! replica today. Tested in `fleet::tests::limits`.
//!
//! **What it costs.** Never an overshoot; an undershoot, bounded: units leased and not yet
//! spent are unavailable to the other replicas until returned (at most two leases per replica,
//! each at most `limit ÷ (8 × live replicas)`, returned within `lease_ttl` plus a sweep), so a
//! client within its limit may be refused only when it needs more than the burst left after
//! other replicas' reservations; a lease never returned burns its unspent units.
//!
//! **Worst cases** beyond one healthy master (no check waits for any of them beyond
//! `command_timeout`):
//! - degraded (Redis unreachable or slower than the bound): each replica decides alone at
//!   `limit ÷ live replicas` (at least 1) with a local GCRA that was charged with everything
//!   the fleet admitted on this replica (`local::LocalLimits::observe`), so it goes on from the
//!   replica's recent traffic: a window that spans the transition sees at most (N − 1)/N of a
//!   burst beyond the limit, when the traffic moves between replicas at that moment; the
//!   division assumes the last heartbeat's count of replicas (more replicas started during the
//!   outage add their share each);
//! - Redis restarted without persistence, or a failover to a replica that missed recent writes:
//!   the keys' budget starts full again: at most one extra burst (`limit`) per key per such
//!   event, plus the leases outstanding then;
//! - split brain (two masters for one slot): each side is one GCRA, at most `limit` per side;
//! - the Redis clock stepped forward by `s`: at most `s ÷ (60 s / limit)` extra units (at most
//!   one burst).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redis::Script;
use tokio::sync::Notify;

use super::connection::Shared;
use super::{LimitKey, Verdict};

/// The burst of every limit, in time: L units of `60 s / L`.
const BURST: Duration = Duration::from_secs(60);
/// A lease takes at most `limit ÷ (this × live replicas)` units, so the leases other replicas
/// hold (two each at most) leave most of the burst to the rest.
const LEASE_SHARE: u32 = 8;
/// Shortest time over which a rate is measured, so one instant's burst is not taken for a rate.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(1);
const MAX_SLOTS: u64 = 1_000_000;
/// Idle slots go after this long; their leases were returned long before.
const SLOT_IDLE: Duration = Duration::from_secs(120);

/// See the module. KEYS[1]: the key's hash. ARGV[1]: one unit's cost in ns. ARGV[2]: units
/// wanted (0: only return leases). ARGV[3]: how long Redis reserves a lease, in µs (0: the units
/// are spent now). ARGV[4]: the new lease's field. ARGV[5], ARGV[6]…: pairs (a returned lease's
/// field, units spent from it). Returns {units granted, units still free, ns until one unit
/// is free when none was granted}.
static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local BURST = 60e9
local EPSILON = 1
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local state = redis.call('HMGET', key, 'level', 'at')
local level = tonumber(state[1]) or 0
local at = tonumber(state[2]) or now
level = math.max(0, level - math.max(0, now - at) * 1000)
for i = 5, #ARGV - 1, 2 do
  local lease = redis.call('HGET', key, ARGV[i])
  if lease then
    local units, unit_cost = string.match(lease, '^(%S+) (%S+)')
    level = level + math.min(tonumber(ARGV[i + 1]), tonumber(units)) * tonumber(unit_cost)
    redis.call('HDEL', key, ARGV[i])
  end
end
local reserved = 0
local last_expiry = now
local fields = redis.call('HGETALL', key)
for i = 1, #fields - 1, 2 do
  if string.byte(fields[i], 1) == 76 then
    local units, unit_cost, expiry = string.match(fields[i + 1], '^(%S+) (%S+) (%S+)')
    local held = tonumber(units) * tonumber(unit_cost)
    expiry = tonumber(expiry)
    if expiry <= now then
      level = level + held
      redis.call('HDEL', key, fields[i])
    else
      reserved = reserved + held
      if expiry > last_expiry then last_expiry = expiry end
    end
  end
end
local free = BURST - level - reserved
local granted = 0
if want > 0 and free + EPSILON >= cost then
  granted = math.min(want, math.floor((free + EPSILON) / cost))
  if hold > 0 then
    local expiry = now + hold
    redis.call('HSET', key, ARGV[4], string.format('%d %s %.0f', granted, ARGV[1], expiry))
    reserved = reserved + granted * cost
    if expiry > last_expiry then last_expiry = expiry end
  else
    level = level + granted * cost
  end
  free = free - granted * cost
end
redis.call('HSET', key, 'level', string.format('%.17g', level), 'at', string.format('%.0f', now))
redis.call('PEXPIRE', key, math.ceil((level + reserved) / 1e6 + (last_expiry - now) / 1000) + 1000)
local retry = 0
if granted == 0 then retry = math.max(0, math.ceil(cost - free)) end
return {granted, math.max(0, math.floor((free + EPSILON) / cost)), retry}
",
    )
});

/// This replica's view of every key it limits.
pub(super) struct Limits {
    slots: moka::sync::Cache<LimitKey, Arc<Slot>>,
    /// Slots that hold leases or have some to return; the background task visits them.
    holding: Mutex<Vec<Weak<Slot>>>,
    /// One pass over `holding` at a time, so a shutdown waits for the background's pass.
    giving_back: tokio::sync::Mutex<()>,
    next_lease: AtomicU64,
}

impl Limits {
    pub(super) fn new() -> Self {
        Self {
            slots: moka::sync::Cache::builder()
                .max_capacity(MAX_SLOTS)
                .time_to_idle(SLOT_IDLE)
                .build(),
            holding: Mutex::new(Vec::new()),
            giving_back: tokio::sync::Mutex::new(()),
            next_lease: AtomicU64::new(0),
        }
    }

    fn slot(&self, shared: &Shared, key: &LimitKey) -> Arc<Slot> {
        self.slots.get_with_by_ref(key, || {
            Arc::new(Slot {
                redis_key: shared.key(key.as_str(), ""),
                state: Mutex::new(SlotState::default()),
                exchanged: Notify::new(),
            })
        })
    }

    fn lease_field(&self, replica_id: &str) -> String {
        let number = self.next_lease.fetch_add(1, Ordering::Relaxed);
        format!("L{replica_id}:{number}")
    }

    fn lock_holding(&self) -> MutexGuard<'_, Vec<Weak<Slot>>> {
        // A list of weak pointers stays valid whatever panicked while it was held.
        self.holding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn list(&self, slot: &Arc<Slot>, state: &mut SlotState) {
        if !state.listed {
            state.listed = true;
            self.lock_holding().push(Arc::downgrade(slot));
        }
    }

    /// The slots still holding something; the others leave the list. The list's lock is
    /// never held with a slot's (`list` takes them in the other order).
    fn holding_slots(&self) -> Vec<Arc<Slot>> {
        let listed = std::mem::take(&mut *self.lock_holding());
        let mut kept = Vec::with_capacity(listed.len());
        let mut slots = Vec::with_capacity(listed.len());
        for weak in listed {
            let Some(slot) = weak.upgrade() else {
                continue;
            };
            {
                let mut state = slot.lock();
                if state.holds_nothing() && !state.exchanging {
                    state.listed = false;
                    continue;
                }
            }
            kept.push(weak);
            slots.push(slot);
        }
        self.lock_holding().extend(kept);
        slots
    }
}

/// One key, as this replica holds it.
struct Slot {
    redis_key: String,
    state: Mutex<SlotState>,
    /// Woken when an exchange with Redis for this key ends.
    exchanged: Notify,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // Every update leaves the state consistent before it can panic (plain assignments).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Default)]
struct SlotState {
    /// The limit the leases were granted under.
    per_minute: u32,
    active: Option<Lease>,
    /// Asked for half-way through `active`, so checks do not wait when it runs out.
    next: Option<Lease>,
    /// Leases no longer spendable, to return with the units spent.
    spent: Vec<Returned>,
    /// An exchange with Redis for this key is in flight (at most one).
    exchanging: bool,
    /// Redis said no unit fits before this.
    blocked_until: Option<Instant>,
    /// Units Redis had free beyond this replica's leases at the last answer.
    others_free: u32,
    /// Checks since `demand_since`, for the rate that sizes the next lease.
    demand: u64,
    demand_since: Option<Instant>,
    /// Observed checks per second (smoothed over exchanges).
    rate: f64,
    /// In `Limits::holding`.
    listed: bool,
}

struct Lease {
    field: String,
    granted: u32,
    left: u32,
    /// Sent time + `lease_ttl`: before Redis's reservation ends (see the module).
    deadline: Instant,
    /// Redis's reservation ends by then; a return sent later is pointless.
    reserved_until: Instant,
}

struct Returned {
    field: String,
    spent: u32,
    reserved_until: Instant,
}

impl SlotState {
    fn holds_nothing(&self) -> bool {
        self.active.is_none() && self.next.is_none() && self.spent.is_empty()
    }

    /// A changed limit: the leases taken under the old one are returned; the new one applies
    /// from this check on.
    fn adopt(&mut self, per_minute: NonZeroU32) {
        if self.per_minute == per_minute.get() {
            return;
        }
        self.per_minute = per_minute.get();
        self.retire(|_| true);
        self.blocked_until = None;
        self.rate = 0.0;
    }

    /// Moves the leases `done` picks to the returns.
    fn retire(&mut self, done: impl Fn(&Lease) -> bool) {
        for lease in [&mut self.active, &mut self.next] {
            if lease.as_ref().is_some_and(&done)
                && let Some(lease) = lease.take()
            {
                self.spent.push(lease.returned());
            }
        }
        if self.active.is_none() {
            self.active = self.next.take();
        }
    }

    /// Spends one unit of a live lease; the estimate of what remains for the key.
    fn spend(&mut self, now: Instant) -> Option<u32> {
        self.retire(|lease| lease.left == 0 || now >= lease.deadline);
        let active = self.active.as_mut()?;
        active.left -= 1;
        let next = self.next.as_ref().map_or(0, |lease| lease.left);
        Some(
            active
                .left
                .saturating_add(next)
                .saturating_add(self.others_free),
        )
    }

    /// Half-way through the active lease, with nothing asked for yet.
    fn wants_next(&self) -> bool {
        !self.exchanging
            && self.next.is_none()
            && self
                .active
                .as_ref()
                .is_some_and(|lease| lease.left * 2 <= lease.granted)
    }

    fn blocked(&mut self, now: Instant) -> Option<Verdict> {
        let until = self.blocked_until?;
        if now < until {
            return Some(Verdict::Limited { reset: until - now });
        }
        self.blocked_until = None;
        None
    }

    /// The next lease's size: the checks seen since the last exchange, smoothed, times
    /// `target`; at most the key's share (see `LEASE_SHARE`).
    fn lease_size(&mut self, now: Instant, target: Duration, live_replicas: u32) -> u32 {
        let since = *self.demand_since.get_or_insert(now);
        let window = now.saturating_duration_since(since).max(MIN_RATE_WINDOW);
        let observed = self.demand as f64 / window.as_secs_f64();
        self.rate = if self.rate == 0.0 {
            observed
        } else {
            (self.rate + observed) / 2.0
        };
        self.demand = 0;
        self.demand_since = Some(now);
        let ceiling = (self.per_minute / LEASE_SHARE.saturating_mul(live_replicas)).max(1);
        let wanted = (self.rate * target.as_secs_f64()).ceil();
        if wanted >= f64::from(ceiling) {
            ceiling
        } else {
            (wanted as u32).max(1)
        }
    }

    fn install(&mut self, lease: Lease) {
        if self.active.is_none() {
            self.active = Some(lease);
        } else if self.next.is_none() {
            self.next = Some(lease);
        } else {
            self.spent.push(lease.returned());
        }
    }
}

impl Lease {
    fn returned(self) -> Returned {
        Returned {
            spent: self.granted - self.left,
            field: self.field,
            reserved_until: self.reserved_until,
        }
    }
}

/// The cost of one unit of `per_minute`, in nanoseconds, as the script reads it.
fn unit_cost(per_minute: NonZeroU32) -> String {
    (BURST.as_nanos() as f64 / f64::from(per_minute.get())).to_string()
}

fn allowed(per_minute: NonZeroU32, remaining: u32) -> Verdict {
    let remaining = remaining.min(per_minute.get());
    Verdict::Allowed {
        remaining,
        // As a local GCRA answers: until every used unit has drained.
        reset: (BURST / per_minute.get()).saturating_mul(per_minute.get() - remaining),
    }
}

pub(super) async fn check(shared: &Arc<Shared>, key: &LimitKey, per_minute: NonZeroU32) -> Verdict {
    if !shared.is_degraded() {
        let slot = shared.limits.slot(shared, key);
        let verdict = if per_minute.get() < shared.settings.lease_min_per_minute {
            direct(shared, &slot, per_minute).await
        } else {
            leased(shared, &slot, per_minute).await
        };
        if let Some(verdict) = verdict {
            if let Verdict::Allowed { .. } = verdict {
                shared
                    .local
                    .observe(key, per_minute, shared.live_replicas());
            }
            return verdict;
        }
    }
    shared.local.check(key, per_minute, shared.live_replicas())
}

/// A low limit: one unit spent in Redis per check. None: Redis did not answer in time.
async fn direct(shared: &Shared, slot: &Slot, per_minute: NonZeroU32) -> Option<Verdict> {
    let sent = Instant::now();
    {
        let mut state = slot.lock();
        state.adopt(per_minute);
        if let Some(limited) = state.blocked(sent) {
            return Some(limited);
        }
    }
    let mut invocation = LEASE.prepare_invoke();
    invocation
        .key(&slot.redis_key)
        .arg(unit_cost(per_minute))
        .arg(1)
        .arg(0)
        .arg("");
    let (granted, remaining, retry_ns): (u32, u32, u64) =
        shared.call("take", &invocation).await.ok()?;
    if granted > 0 {
        return Some(allowed(per_minute, remaining));
    }
    let reset = Duration::from_nanos(retry_ns);
    slot.lock().blocked_until = Some(sent + reset);
    Some(Verdict::Limited { reset })
}

/// A high limit: spent from this replica's lease; waits (within the bound) only when no lease
/// is left. None: Redis did not answer in time.
async fn leased(shared: &Arc<Shared>, slot: &Arc<Slot>, per_minute: NonZeroU32) -> Option<Verdict> {
    let mut deadline = None;
    let mut counted = false;
    loop {
        let exchanged = slot.exchanged.notified();
        tokio::pin!(exchanged);
        {
            let mut state = slot.lock();
            let now = Instant::now();
            state.adopt(per_minute);
            if !counted {
                state.demand += 1;
                counted = true;
            }
            if let Some(remaining) = state.spend(now) {
                let ask = state.wants_next();
                state.exchanging |= ask;
                drop(state);
                if ask {
                    spawn_exchange(shared, slot, per_minute, true);
                }
                return Some(allowed(per_minute, remaining));
            }
            if let Some(limited) = state.blocked(now) {
                return Some(limited);
            }
            // Registered before the lock is released, so the exchange's end cannot be missed.
            exchanged.as_mut().enable();
            if !state.exchanging {
                state.exchanging = true;
                spawn_exchange(shared, slot, per_minute, true);
            }
        }
        let deadline = *deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + shared.settings.command_timeout);
        if tokio::time::timeout_at(deadline, exchanged).await.is_err() {
            if slot.lock().exchanging || shared.is_degraded() {
                // Redis has not answered within the bound.
                return None;
            }
            // Redis answered, but other checks took every unit it granted meanwhile.
            return Some(Verdict::Limited {
                reset: BURST / per_minute.get(),
            });
        }
        if shared.is_degraded() {
            return None;
        }
    }
}

/// Runs one exchange for `slot` in its own task, so a check that stops waiting (its bound, a
/// cancelled call) leaves the slot consistent. The caller has set `exchanging`.
fn spawn_exchange(shared: &Arc<Shared>, slot: &Arc<Slot>, per_minute: NonZeroU32, ask: bool) {
    let (shared, slot) = (shared.clone(), slot.clone());
    tokio::spawn(async move { exchange(&shared, &slot, per_minute, ask).await });
}

/// Returns the spent leases and, if `ask`, asks for a new one.
async fn exchange(shared: &Arc<Shared>, slot: &Arc<Slot>, per_minute: NonZeroU32, ask: bool) {
    let settings = &shared.settings;
    let sent = Instant::now();
    let hold = settings.lease_ttl * 2;
    let (returned, want, field) = {
        let mut state = slot.lock();
        state
            .spent
            .retain(|returned| returned.reserved_until > sent);
        let returned = std::mem::take(&mut state.spent);
        let want = if ask {
            state.lease_size(sent, settings.lease_target, shared.live_replicas())
        } else {
            0
        };
        (
            returned,
            want,
            shared.limits.lease_field(&settings.replica_id),
        )
    };
    let mut invocation = LEASE.prepare_invoke();
    invocation
        .key(&slot.redis_key)
        .arg(unit_cost(per_minute))
        .arg(want)
        .arg(u64::try_from(hold.as_micros()).unwrap_or(u64::MAX))
        .arg(&field);
    for lease in &returned {
        invocation.arg(&lease.field).arg(lease.spent);
    }
    let operation = if ask { "lease" } else { "return" };
    let answer: Result<(u32, u32, u64), _> = shared.call(operation, &invocation).await;
    {
        let mut state = slot.lock();
        state.exchanging = false;
        match answer {
            Ok((granted, others_free, retry_ns)) => {
                state.others_free = others_free;
                if granted > 0 {
                    let lease = Lease {
                        field,
                        granted,
                        left: granted,
                        deadline: sent + settings.lease_ttl,
                        reserved_until: sent + hold,
                    };
                    if state.per_minute == per_minute.get() {
                        state.blocked_until = None;
                        state.install(lease);
                    } else {
                        // The limit changed while this lease was asked for.
                        state.spent.push(lease.returned());
                    }
                } else if ask && state.active.is_none() && state.next.is_none() {
                    state.blocked_until = Some(sent + Duration::from_nanos(retry_ns));
                }
            }
            // Whether Redis applied it is unknown: returning a lease twice is harmless, and a
            // lease granted unseen counts as spent when its reservation ends.
            Err(_) => state.spent.extend(returned),
        }
        if !state.holds_nothing() {
            shared.limits.list(slot, &mut state);
        }
    }
    slot.exchanged.notify_waiters();
}

/// Returns the leases whose time is up (the background task, every half `lease_ttl`), so
/// their unspent units go back to the fleet.
pub(super) async fn give_back_idle(shared: &Arc<Shared>) {
    give_back(shared, |now, lease| {
        now >= lease.deadline || lease.left == 0
    })
    .await;
}

/// Returns every lease (shutdown).
pub(super) async fn give_back_all(shared: &Arc<Shared>) {
    give_back(shared, |_, _| true).await;
}

async fn give_back(shared: &Arc<Shared>, done: impl Fn(Instant, &Lease) -> bool) {
    let _one_pass = shared.limits.giving_back.lock().await;
    let mut exchanges = tokio::task::JoinSet::new();
    for slot in shared.limits.holding_slots() {
        let per_minute = {
            let mut state = slot.lock();
            let now = Instant::now();
            state.retire(|lease| done(now, lease));
            if state.exchanging || state.spent.is_empty() {
                continue;
            }
            state.exchanging = true;
            state.per_minute
        };
        let Some(per_minute) = NonZeroU32::new(per_minute) else {
            slot.lock().exchanging = false;
            continue;
        };
        let shared = shared.clone();
        // Concurrent, so they share the connection's pipeline.
        exchanges.spawn(async move { exchange(&shared, &slot, per_minute, false).await });
    }
    while exchanges.join_next().await.is_some() {}
}
