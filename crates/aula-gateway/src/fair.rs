//! Token-fair admission to one engine: the Virtual Token Counter of Sheng et
//! al., "Fairness in Serving Large Language Models" (OSDI 2024).
//!
//! Requests wait here, not in the engine: the engine gets at most `slots`
//! requests at once. Each user has a counter of the weighted service they
//! received (input tokens x `input_weight` + output tokens x `output_weight`,
//! divided by the user's weight). When a slot frees, the next request comes
//! from the waiting user with the smallest counter. A user who becomes active
//! is lifted to the smallest counter among those waiting (or to the counter
//! of the last user to leave the queue when nobody waits), so idling banks no
//! credit. No slot idles while anyone waits (work-conserving), the queue is
//! bounded per user and in total, and a waiter whose client leaves is removed.
//! The default bounds let a whole class (`CLASS_SIZE` users) each queue
//! their per-user bound without filling the queue: a few busy users cannot
//! lock the rest of the class out with 429s.
//!
//! Room for newcomers (`with_room`): for an engine that pauses an
//! over-share user's sequence for a user with nothing running (Aula's own
//! engine), up to `room` more requests than `slots` may be sent, each only
//! to a user with nothing in service here; the engine then pauses the
//! heaviest user's youngest sequence for it instead of making it wait for
//! a slot to free. With every slot busy, a user with something running
//! waits as before.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FairConfig {
    pub input_weight: f64,
    pub output_weight: f64,
    pub max_queued_per_user: usize,
    pub max_queued: usize,
}

/// The most users the default queue bounds are sized for.
pub const CLASS_SIZE: usize = 256;

impl Default for FairConfig {
    fn default() -> Self {
        // The paper's weights: an output token costs twice an input token.
        FairConfig {
            input_weight: 1.0,
            output_weight: 2.0,
            max_queued_per_user: 16,
            max_queued: 16 * CLASS_SIZE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFull {
    User,
    Total,
}

impl From<QueueFull> for aula_protocol::ApiError {
    fn from(full: QueueFull) -> Self {
        aula_protocol::ApiError::RateLimited {
            message: match full {
                QueueFull::User => {
                    "you have too many requests waiting for this model; wait for some to finish"
                        .into()
                }
                QueueFull::Total => "this model's queue is full; try again shortly".into(),
            },
            code: "queue_full",
            retry_after_s: 1,
        }
    }
}

struct Waiter {
    id: u64,
    prompt_tokens: f64,
    weight: f64,
    tx: oneshot::Sender<Permit>,
}

#[derive(Default)]
struct UserState {
    counter: f64,
    waiting: VecDeque<Waiter>,
    in_service: usize,
    /// Dispatch sequence number of this user's last grant (ties go to the
    /// user served least recently).
    last_served: u64,
}

struct Inner {
    slots: usize,
    /// Requests beyond `slots`, for users with nothing in service.
    room: usize,
    busy: usize,
    queued: usize,
    users: HashMap<String, UserState>,
    last_departed: f64,
    next_id: u64,
    dispatches: u64,
}

pub struct FairQueue {
    cfg: FairConfig,
    inner: Mutex<Inner>,
}

/// A slot on the engine; dropping it frees the slot for the next request.
pub struct Permit {
    queue: Arc<FairQueue>,
    user: String,
    weight: f64,
    charged_prompt: f64,
    released: bool,
}

impl Permit {
    /// Charge the real usage once known: output tokens, and the difference
    /// between the real prompt and the estimate charged at dispatch.
    /// With `prompt_tokens` unknown (None), the estimate stands.
    pub fn charge(&mut self, prompt_tokens: Option<u64>, completion_tokens: u64) {
        let cfg = self.queue.cfg;
        let prompt = prompt_tokens
            .map(|p| p as f64)
            .unwrap_or(self.charged_prompt);
        let extra = cfg.input_weight * (prompt - self.charged_prompt)
            + cfg.output_weight * completion_tokens as f64;
        self.charged_prompt = prompt;
        let mut g = self.queue.lock();
        if let Some(u) = g.users.get_mut(&self.user) {
            u.counter += extra / self.weight;
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let queue = self.queue.clone();
        let mut g = queue.lock();
        g.busy = g.busy.saturating_sub(1);
        if let Some(u) = g.users.get_mut(&self.user) {
            u.in_service = u.in_service.saturating_sub(1);
        }
        queue.dispatch(&mut g);
        g.forget_idle();
    }
}

/// Waiting for a slot; dropping it (the client left) leaves the queue.
pub struct Ticket {
    queue: Arc<FairQueue>,
    user: String,
    id: u64,
    rx: Option<oneshot::Receiver<Permit>>,
}

impl Ticket {
    /// Wait for the slot. Dropping this future leaves the queue.
    pub async fn ready(mut self) -> Option<Permit> {
        let granted = match self.rx.as_mut() {
            Some(rx) => rx.await.ok(),
            None => None,
        };
        self.rx = None;
        granted
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.rx.is_none() {
            return;
        }
        let mut g = self.queue.lock();
        if let Some(u) = g.users.get_mut(&self.user)
            && let Some(i) = u.waiting.iter().position(|w| w.id == self.id)
        {
            u.waiting.remove(i);
            g.queued -= 1;
        }
        g.forget_idle();
    }
}

impl Inner {
    /// Users with nothing queued or running and no advantage to keep.
    fn forget_idle(&mut self) {
        if self.users.len() > 1024 {
            let floor = self.last_departed;
            self.users
                .retain(|_, u| !u.waiting.is_empty() || u.in_service > 0 || u.counter > floor);
        }
    }
}

pub use aula_fleet::QueueStats;

/// The fleet reads a queue's load (it never evicts a busy model).
impl aula_fleet::Queue for FairQueue {
    fn stats(&self) -> QueueStats {
        FairQueue::stats(self)
    }
}

impl FairQueue {
    pub fn new(slots: usize, cfg: FairConfig) -> Arc<FairQueue> {
        Self::with_room(slots, 0, cfg)
    }

    /// A queue that may send up to `room` requests beyond `slots`, each to
    /// a user with nothing in service (module docs).
    pub fn with_room(slots: usize, room: usize, cfg: FairConfig) -> Arc<FairQueue> {
        Arc::new(FairQueue {
            cfg,
            inner: Mutex::new(Inner {
                room,
                slots: slots.max(1),
                busy: 0,
                queued: 0,
                users: HashMap::new(),
                last_departed: 0.0,
                next_id: 0,
                dispatches: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> QueueStats {
        let g = self.lock();
        QueueStats {
            slots: g.slots,
            busy: g.busy,
            queued: g.queued,
        }
    }

    /// This user's requests here: in service and waiting.
    pub fn held(&self, user: &str) -> usize {
        self.lock()
            .users
            .get(user)
            .map_or(0, |u| u.in_service + u.waiting.len())
    }

    /// This user's counter (for tests and the admin view).
    pub fn counter(&self, user: &str) -> f64 {
        self.lock()
            .users
            .get(user)
            .map(|u| u.counter)
            .unwrap_or(0.0)
    }

    /// Join the queue. `prompt_tokens` is the estimate charged at dispatch;
    /// `weight` (> 0) divides everything this request is charged.
    pub fn enqueue(
        self: &Arc<Self>,
        user: &str,
        weight: f64,
        prompt_tokens: u64,
    ) -> Result<Ticket, QueueFull> {
        let weight = if weight > 0.0 && weight.is_finite() {
            weight
        } else {
            1.0
        };
        let mut g = self.lock();
        let waiting_now = g.users.get(user).map(|u| u.waiting.len()).unwrap_or(0);
        if waiting_now >= self.cfg.max_queued_per_user {
            return Err(QueueFull::User);
        }
        if g.queued >= self.cfg.max_queued {
            return Err(QueueFull::Total);
        }
        if waiting_now == 0 {
            // Becoming active: no credit for having been idle.
            let floor = g
                .users
                .iter()
                .filter(|(name, u)| !u.waiting.is_empty() && name.as_str() != user)
                .map(|(_, u)| u.counter)
                .reduce(f64::min)
                .unwrap_or(g.last_departed);
            let u = g.users.entry(user.to_string()).or_default();
            u.counter = u.counter.max(floor);
        }
        let id = g.next_id;
        g.next_id += 1;
        let (tx, rx) = oneshot::channel();
        g.users
            .entry(user.to_string())
            .or_default()
            .waiting
            .push_back(Waiter {
                id,
                prompt_tokens: prompt_tokens as f64,
                weight,
                tx,
            });
        g.queued += 1;
        self.dispatch(&mut g);
        Ok(Ticket {
            queue: self.clone(),
            user: user.to_string(),
            id,
            rx: Some(rx),
        })
    }

    /// Hand free slots to the waiting users with the smallest counters.
    fn dispatch(self: &Arc<Self>, g: &mut Inner) {
        while g.busy < g.slots + g.room && g.queued > 0 {
            // Past the slots, only users with nothing in service.
            let newcomers_only = g.busy >= g.slots;
            // Smallest counter; ties go to the user with fewer requests
            // running, then to the one served least recently.
            let Some(name) = g
                .users
                .iter()
                .filter(|(_, u)| !u.waiting.is_empty())
                .filter(|(_, u)| !newcomers_only || u.in_service == 0)
                .min_by(|a, b| {
                    a.1.counter
                        .total_cmp(&b.1.counter)
                        .then(a.1.in_service.cmp(&b.1.in_service))
                        .then(a.1.last_served.cmp(&b.1.last_served))
                })
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            let cfg = self.cfg;
            let Some(u) = g.users.get_mut(&name) else {
                break;
            };
            let Some(w) = u.waiting.pop_front() else {
                break;
            };
            let counter_before = u.counter;
            let served_before = u.last_served;
            g.dispatches += 1;
            let Some(u) = g.users.get_mut(&name) else {
                break;
            };
            u.last_served = g.dispatches;
            u.counter += cfg.input_weight * w.prompt_tokens / w.weight;
            u.in_service += 1;
            let left_queue = u.waiting.is_empty();
            let counter_now = u.counter;
            g.queued -= 1;
            g.busy += 1;
            if left_queue {
                g.last_departed = counter_now;
            }
            let permit = Permit {
                queue: self.clone(),
                user: name.clone(),
                weight: w.weight,
                charged_prompt: w.prompt_tokens,
                released: false,
            };
            if let Err(mut permit) = w.tx.send(permit) {
                // The client left between enqueue and now: undo, without
                // re-entering dispatch from the permit's Drop.
                permit.released = true;
                g.busy -= 1;
                if let Some(u) = g.users.get_mut(&name) {
                    u.in_service -= 1;
                    u.counter = counter_before;
                    u.last_served = served_before;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FairConfig {
        FairConfig {
            input_weight: 1.0,
            output_weight: 2.0,
            max_queued_per_user: 100,
            max_queued: 1000,
        }
    }

    /// With the default bounds, a whole class can each queue as much as one
    /// user may, and the next user still gets in.
    #[test]
    fn default_bounds_leave_room_for_the_whole_class() {
        let q = FairQueue::new(1, FairConfig::default());
        let mut held = Vec::new();
        for u in 0..CLASS_SIZE - 1 {
            // Each user queues until their own bound stops them.
            loop {
                match q.enqueue(&format!("u{u}"), 1.0, 1) {
                    Ok(t) => held.push(t),
                    Err(e) => {
                        assert_eq!(e, QueueFull::User, "user {u}");
                        break;
                    }
                }
            }
        }
        assert!(q.enqueue("last", 1.0, 1).is_ok());
    }

    fn granted(t: &mut Ticket) -> Option<Permit> {
        t.rx.as_mut()?.try_recv().ok()
    }

    #[test]
    fn work_conserving_and_bounded_slots() {
        let q = FairQueue::new(2, cfg());
        let mut t: Vec<Ticket> = (0..5)
            .map(|_| q.enqueue("heavy", 1.0, 10).unwrap())
            .collect();
        let mut p: Vec<Permit> = t.iter_mut().filter_map(granted).collect();
        assert_eq!(p.len(), 2);
        assert_eq!(
            q.stats(),
            QueueStats {
                slots: 2,
                busy: 2,
                queued: 3
            }
        );
        p.pop();
        // The freed slot went to the next waiter at once.
        assert_eq!(q.stats().busy, 2);
        assert_eq!(q.stats().queued, 2);
    }

    /// With room for newcomers, a user with nothing in service is sent
    /// past the slots (the engine pauses someone for them); a user with
    /// something running is not, and the room is bounded.
    #[test]
    fn room_past_the_slots_is_only_for_users_with_nothing_running() {
        let q = FairQueue::with_room(2, 2, cfg());
        let mut heavy: Vec<Ticket> = (0..5)
            .map(|_| q.enqueue("heavy", 1.0, 10).unwrap())
            .collect();
        let held: Vec<Permit> = heavy.iter_mut().filter_map(granted).collect();
        assert_eq!(held.len(), 2, "the heavy user gets the slots, not the room");
        let mut a1 = q.enqueue("a", 1.0, 10).unwrap();
        let mut a2 = q.enqueue("a", 1.0, 10).unwrap();
        let pa = granted(&mut a1).expect("a newcomer is sent past the slots");
        assert!(granted(&mut a2).is_none(), "not a second request of theirs");
        let mut b = q.enqueue("b", 1.0, 10).unwrap();
        let pb = granted(&mut b).expect("the room holds two");
        let mut c = q.enqueue("c", 1.0, 10).unwrap();
        assert!(granted(&mut c).is_none(), "and no more");
        assert_eq!(q.stats().busy, 4);
        drop(pa);
        // Still past the slots: the freed place goes to a user with
        // nothing running (c), not to a's or heavy's next.
        let pc = granted(&mut c).expect("c has nothing running");
        assert!(granted(&mut a2).is_none());
        assert!(heavy.iter_mut().all(|t| granted(t).is_none()));
        drop((pb, pc, held));
    }

    #[test]
    fn light_user_goes_before_heavy_backlog() {
        let q = FairQueue::new(1, cfg());
        let mut heavy: Vec<Ticket> = (0..10)
            .map(|_| q.enqueue("heavy", 1.0, 100).unwrap())
            .collect();
        let mut first = granted(&mut heavy[0]).unwrap();
        first.charge(Some(100), 50);
        let mut light = q.enqueue("light", 1.0, 100).unwrap();
        drop(first);
        // The light user was lifted to the heavy user's counter, and wins the
        // tie because it has nothing running.
        let _light_slot = granted(&mut light).unwrap();
        assert!(granted(&mut heavy[1]).is_none());
    }

    #[test]
    fn service_is_shared_by_counter() {
        // Two backlogged users, one slot: grants alternate so that counters
        // stay within one request's cost of each other.
        let q = FairQueue::new(1, cfg());
        let mut a: VecDeque<Ticket> = (0..20).map(|_| q.enqueue("a", 1.0, 10).unwrap()).collect();
        let mut b: VecDeque<Ticket> = (0..20).map(|_| q.enqueue("b", 1.0, 10).unwrap()).collect();
        let mut order = String::new();
        for _ in 0..20 {
            let (who, mut p) = if let Some(p) = a.front_mut().and_then(granted) {
                a.pop_front();
                ('a', p)
            } else if let Some(p) = b.front_mut().and_then(granted) {
                b.pop_front();
                ('b', p)
            } else {
                panic!("no grant; order so far {order}");
            };
            order.push(who);
            p.charge(Some(10), 5);
        }
        let na = order.matches('a').count();
        assert!((9..=11).contains(&na), "{order}");
        assert!((q.counter("a") - q.counter("b")).abs() <= 20.0 + 1e-9);
    }

    #[test]
    fn weights_divide_cost() {
        let q = FairQueue::new(1, cfg());
        let mut t: VecDeque<Ticket> = VecDeque::new();
        for _ in 0..30 {
            t.push_back(q.enqueue("teacher", 3.0, 10).unwrap());
            t.push_back(q.enqueue("student", 1.0, 10).unwrap());
        }
        let mut served = HashMap::<&str, usize>::new();
        for _ in 0..40 {
            let i = t
                .iter_mut()
                .position(|x| x.rx.as_mut().is_some_and(|r| !r.is_empty()))
                .unwrap();
            let mut tk = t.remove(i).unwrap();
            let mut p = granted(&mut tk).unwrap();
            *served
                .entry(if p.weight == 3.0 {
                    "teacher"
                } else {
                    "student"
                })
                .or_default() += 1;
            p.charge(Some(10), 10);
        }
        assert!(served["teacher"] >= 2 * served["student"], "{served:?}");
    }

    #[test]
    fn bounds_and_leaving() {
        let q = FairQueue::new(
            1,
            FairConfig {
                max_queued_per_user: 2,
                max_queued: 3,
                ..cfg()
            },
        );
        let mut a1 = q.enqueue("a", 1.0, 1).unwrap();
        let _p = granted(&mut a1).unwrap();
        let a2 = q.enqueue("a", 1.0, 1).unwrap();
        let _a3 = q.enqueue("a", 1.0, 1).unwrap();
        assert_eq!(q.enqueue("a", 1.0, 1).err(), Some(QueueFull::User));
        let _b1 = q.enqueue("b", 1.0, 1).unwrap();
        assert_eq!(q.enqueue("c", 1.0, 1).err(), Some(QueueFull::Total));
        drop(a2);
        assert_eq!(q.stats().queued, 2);
        assert!(q.enqueue("c", 1.0, 1).is_ok());
    }

    #[test]
    fn a_permit_for_a_departed_client_is_not_lost() {
        let q = FairQueue::new(1, cfg());
        let mut a = q.enqueue("a", 1.0, 1).unwrap();
        let p = granted(&mut a).unwrap();
        let mut b = q.enqueue("b", 1.0, 1).unwrap();
        // b's receiver is closed before the slot frees: the slot must go on to c.
        b.rx.as_mut().unwrap().close();
        let mut c = q.enqueue("c", 1.0, 1).unwrap();
        drop(p);
        let _c_slot = granted(&mut c).unwrap();
        assert_eq!(q.stats().busy, 1);
    }
}
