//! How many students a box holds: a class simulated on the box's measured
//! (or predicted) step times, and the largest class that still meets a
//! stated interactive target.
//!
//! The rules, as `aula plan --students` applies them:
//! - **A student** thinks (an exponential time, mean `think_s`), sends one
//!   request of `prompt_tokens` and waits for its `answer_tokens`, streamed,
//!   then thinks again; never more than one request at a time. Students are
//!   split evenly over the models (student `i` uses model `i mod models`).
//! - **The gateway** queues a request until its engine has a free slot,
//!   first come first served (with one request per student, the fair queue
//!   orders them the same way).
//! - **An engine** runs continuous batching as llama.cpp does: each step
//!   decodes one token of every generating sequence and feeds as much
//!   waiting prompt as the micro-batch still holds; the step takes the
//!   decode time of its batch (measured or predicted at 1 and N sequences,
//!   straight between and beyond them) plus its prompt tokens at the
//!   prefill rate. A sequence's first token comes at the end of the step
//!   that finished its prompt.
//! - **Several models** share the box's cores (or GPU) in turn: one step
//!   at a time, round robin over the engines with work. That is the worst
//!   case of two engines on one CPU; on a GPU steps of two processes do
//!   overlap a little.
//! - **The target** is met when the median request decodes at no less than
//!   `rate_tps` tokens/s (its tokens after the first over the time after
//!   the first) and the 95th percentile time to first token (queueing
//!   included) is no more than `ttft_p95_s`.
//! - **The class held** is the largest number of students that meets the
//!   target, found by doubling and then halving the gap; each simulation
//!   runs at least 4,000 requests (and three per student, so a big class
//!   is watched over several think times) after a warm-up of 400 (or one
//!   per student), with a fixed seed, so the answer is the same on every
//!   machine.

use crate::assessment::ModelFigures;
use crate::estimate::{PlanRequest, estimate};
use crate::hardware::Hardware;
use crate::shape::ModelShape;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// One model as the box serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Engine {
    pub model: String,
    /// Sequences decoded at once (the engine's slots).
    pub slots: u32,
    /// Seconds of one decode step at a number of sequences, ascending.
    pub steps: Vec<(u32, f64)>,
    /// Prompt tokens per second.
    pub prefill_tps: f64,
    /// Tokens of prompt a step takes at most (llama.cpp's micro-batch).
    pub n_batch: u32,
    /// `measured` (from `aula assess`) or `predicted` (the planner's
    /// formulas), with what.
    pub source: String,
}

impl Engine {
    /// From what `aula assess` measured: the step at one stream
    /// (1 / its decode rate) and at `parallel` streams (`parallel` / their
    /// rate together), and the one-stream prefill rate.
    pub fn measured(m: &ModelFigures, slots: u32) -> Option<Engine> {
        let (d1, dn, p) = (
            m.decode_tps_1.median,
            m.decode_tps_n.median,
            m.prefill_tps.median,
        );
        if !(d1 > 0.0 && dn > 0.0 && p > 0.0) {
            return None;
        }
        let mut steps = vec![(1, 1.0 / d1)];
        if m.parallel > 1 {
            steps.push((m.parallel as u32, m.parallel as f64 / dn));
        }
        Some(Engine {
            model: m.name.clone(),
            slots: slots.max(1),
            steps,
            prefill_tps: p,
            n_batch: 512,
            source: format!(
                "measured by aula assess: decode {d1:.1} tok/s at 1 stream, {dn:.1} at {}, prefill {p:.0} tok/s",
                m.parallel
            ),
        })
    }

    /// From the planner's formulas for `shape` on `hw`, with `r.users`
    /// slots: the decode step at 1, 2, 4, ... sequences and at the slots
    /// (straight between them: a step is linear in the batch between the
    /// points where it turns from memory- to compute-bound), and the
    /// prefill rate. None where the profile has no speed figures.
    pub fn predicted(shape: &ModelShape, hw: &Hardware, r: &PlanRequest) -> Option<Engine> {
        let slots = r.users.max(1);
        let mut batches: Vec<u32> = std::iter::successors(Some(1u32), |b| b.checked_mul(2))
            .take_while(|&b| b < slots)
            .collect();
        batches.push(slots);
        let steps: Vec<(u32, f64)> = batches
            .into_iter()
            .map(|b| crate::estimate::decode_step(shape, hw, r, b).map(|(t, _, _)| (b, t)))
            .collect::<Option<_>>()?;
        let prefill = estimate(shape, hw, r).speed?.prefill_tokens_per_s;
        if prefill.is_nan() || prefill <= 0.0 || steps.iter().any(|&(_, t)| t.is_nan() || t <= 0.0)
        {
            return None;
        }
        Some(Engine {
            model: shape.id.clone(),
            slots,
            steps,
            prefill_tps: prefill,
            n_batch: r.n_ubatch.max(1),
            source: format!("predicted by the planner for {}", hw.name),
        })
    }

    /// Seconds of a decode step of `batch` sequences: straight between the
    /// known points, and along the last two beyond them.
    pub fn step_s(&self, batch: u32) -> f64 {
        let pts = &self.steps;
        let Some(&(b0, t0)) = pts.first() else {
            return 0.0;
        };
        if batch == 0 {
            return 0.0;
        }
        if pts.len() == 1 || batch <= b0 {
            return t0
                * if pts.len() == 1 {
                    f64::from(batch) / f64::from(b0)
                } else {
                    1.0
                };
        }
        let seg = pts
            .windows(2)
            .find(|w| batch <= w[1].0)
            .unwrap_or(&pts[pts.len() - 2..]);
        let ((xa, ya), (xb, yb)) = (seg[0], seg[1]);
        let slope = (yb - ya) / f64::from(xb.saturating_sub(xa).max(1));
        ya + slope * (f64::from(batch) - f64::from(xa))
    }
}

/// The class: how many students and how they work.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Class {
    pub students: u32,
    /// Mean seconds between an answer's end and the next question.
    pub think_s: f64,
    pub prompt_tokens: u32,
    pub answer_tokens: u32,
}

impl Class {
    /// The class as asked, or why it cannot be simulated: at most
    /// [`MAX_STUDENTS`] students, questions and answers of at most
    /// [`MAX_TOKENS`], a finite think time of 0 or more.
    pub fn check(&self) -> Result<(), String> {
        if self.students > MAX_STUDENTS {
            return Err(format!(
                "at most {MAX_STUDENTS} students (got {})",
                self.students
            ));
        }
        if self.answer_tokens == 0 || self.answer_tokens > MAX_TOKENS {
            return Err(format!(
                "answers of 1 to {MAX_TOKENS} tokens (got {})",
                self.answer_tokens
            ));
        }
        if self.prompt_tokens > MAX_TOKENS {
            return Err(format!(
                "questions of at most {MAX_TOKENS} tokens (got {})",
                self.prompt_tokens
            ));
        }
        if !(self.think_s.is_finite() && self.think_s >= 0.0) {
            return Err(format!(
                "a think time of 0 s or more (got {})",
                self.think_s
            ));
        }
        Ok(())
    }
}

/// What a student should get.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Target {
    /// Tokens per second each answer streams at (median request).
    pub rate_tps: f64,
    /// 95th percentile time to first token, queueing included (seconds).
    pub ttft_p95_s: f64,
}

/// What one simulated class got.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Outcome {
    pub students: u32,
    pub requests: usize,
    pub ttft_p50_s: f64,
    pub ttft_p95_s: f64,
    /// Median request's decode rate (tokens/s after its first token).
    pub rate_p50_tps: f64,
    /// Generated tokens per second, all students.
    pub output_tps: f64,
}

impl Outcome {
    pub fn meets(&self, t: &Target) -> bool {
        self.rate_p50_tps >= t.rate_tps && self.ttft_p95_s <= t.ttft_p95_s
    }
}

/// The largest class that meets the target, what it got, and what the next
/// larger one got (None when the search stopped at `MAX_STUDENTS`).
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    pub students: u32,
    pub at: Option<Outcome>,
    pub above: Option<Outcome>,
    /// Why no student at all can be served at the target, if so.
    pub reason: Option<String>,
}

/// The search's ceiling, and the most students one simulation takes.
pub const MAX_STUDENTS: u32 = 100_000;

/// The longest question and answer one simulation takes (tokens each).
pub const MAX_TOKENS: u32 = 1 << 20;

const REQUESTS: usize = 4000;
const WARMUP: usize = 400;
const SEED: u64 = 0x05ee_dc1a_55e5;

/// splitmix64: the same stream on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }
}

/// A time in the event queue (earliest first).
#[derive(PartialEq)]
struct At(f64, usize);

impl Eq for At {}

impl PartialOrd for At {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for At {
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
    }
}

struct Seq {
    arrived: f64,
    prompt_left: u32,
    first_at: f64,
    tokens: u32,
    student: usize,
    /// Its prompt was finished by the step now being taken.
    fresh: bool,
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<(usize, f64)>,
    running: Vec<Seq>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Simulate `class` on `engines` (at least one) until `requests` answers
/// (at least three per student) after the warm-up (at least one per
/// student) have ended.
pub fn simulate_n(engines: &[Engine], class: &Class, requests: usize) -> Outcome {
    // Beyond the stated bounds a simulation would not end in useful time;
    // callers refuse such input ([`Class::check`]), and here it is capped.
    let students = class.students.min(MAX_STUDENTS) as usize;
    let mut out = Outcome {
        students: class.students,
        requests: 0,
        ttft_p50_s: 0.0,
        ttft_p95_s: 0.0,
        rate_p50_tps: 0.0,
        output_tps: 0.0,
    };
    if engines.is_empty() || students == 0 {
        return out;
    }
    let mut rng = Rng(SEED);
    let mut arrivals: BinaryHeap<At> = (0..students)
        .map(|s| At(rng.exp(class.think_s), s))
        .collect();
    let mut lanes: Vec<Lane> = engines.iter().map(|_| Lane::default()).collect();
    let (mut now, mut turn, mut done) = (0.0_f64, 0usize, 0usize);
    let (mut ttfts, mut rates) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    let (mut tokens, mut warm_at) = (0u64, 0.0_f64);
    let answer = class.answer_tokens.clamp(1, MAX_TOKENS);
    let warmup = WARMUP.max(students);
    let requests = requests.max(students.saturating_mul(3));
    while done < requests + warmup {
        while arrivals.peek().is_some_and(|a| a.0 <= now) {
            if let Some(At(t, s)) = arrivals.pop() {
                lanes[s % engines.len()].queue.push_back((s, t));
            }
        }
        for (lane, e) in lanes.iter_mut().zip(engines) {
            while lane.running.len() < e.slots as usize {
                let Some((student, arrived)) = lane.queue.pop_front() else {
                    break;
                };
                lane.running.push(Seq {
                    arrived,
                    prompt_left: class.prompt_tokens.clamp(1, MAX_TOKENS),
                    first_at: 0.0,
                    tokens: 0,
                    student,
                    fresh: false,
                });
            }
        }
        // The next engine with work, in turn.
        let Some(i) = (0..lanes.len())
            .map(|k| (turn + k) % lanes.len())
            .find(|&k| !lanes[k].running.is_empty())
        else {
            match arrivals.peek() {
                Some(a) => {
                    now = now.max(a.0);
                    continue;
                }
                None => break,
            }
        };
        turn = i + 1;
        let (lane, e) = (&mut lanes[i], &engines[i]);
        let decoding = lane.running.iter().filter(|s| s.prompt_left == 0).count() as u32;
        let mut room = e.n_batch.saturating_sub(decoding).max(1);
        let mut fed = 0u32;
        for s in lane.running.iter_mut() {
            if s.prompt_left > 0 && room > 0 {
                let take = s.prompt_left.min(room);
                s.prompt_left -= take;
                room -= take;
                fed += take;
                s.fresh = s.prompt_left == 0;
            }
        }
        now += e.step_s(decoding) + f64::from(fed) / e.prefill_tps;
        let mut k = 0;
        while k < lane.running.len() {
            let s = &mut lane.running[k];
            if s.fresh {
                (s.fresh, s.first_at, s.tokens) = (false, now, 1);
            } else if s.prompt_left == 0 {
                s.tokens += 1;
            }
            if s.prompt_left > 0 || s.tokens < answer {
                k += 1;
                continue;
            }
            let s = lane.running.swap_remove(k);
            done += 1;
            if done == warmup {
                warm_at = now;
            }
            if done > warmup {
                ttfts.push(s.first_at - s.arrived);
                if answer > 1 && now > s.first_at {
                    rates.push(f64::from(answer - 1) / (now - s.first_at));
                }
                tokens += u64::from(answer);
            }
            arrivals.push(At(now + rng.exp(class.think_s), s.student));
        }
    }
    ttfts.sort_by(f64::total_cmp);
    rates.sort_by(f64::total_cmp);
    out.requests = ttfts.len();
    out.ttft_p50_s = percentile(&ttfts, 0.50);
    out.ttft_p95_s = percentile(&ttfts, 0.95);
    out.rate_p50_tps = if rates.is_empty() {
        // One-token answers: no rate to speak of; never the limit.
        f64::INFINITY
    } else {
        percentile(&rates, 0.50)
    };
    if now > warm_at {
        out.output_tps = tokens as f64 / (now - warm_at);
    }
    out
}

/// [`simulate_n`] with the standard number of requests.
pub fn simulate(engines: &[Engine], class: &Class) -> Outcome {
    simulate_n(engines, class, REQUESTS)
}

/// The largest class of `shape` students (its `students` ignored) that
/// meets `target` on `engines`.
pub fn capacity(engines: &[Engine], shape: &Class, target: &Target) -> Capacity {
    let run = |n: u32| {
        simulate(
            engines,
            &Class {
                students: n,
                ..*shape
            },
        )
    };
    let one = run(1);
    if !one.meets(target) {
        return Capacity {
            students: 0,
            at: None,
            above: Some(one),
            reason: Some(if one.rate_p50_tps < target.rate_tps {
                format!(
                    "one student alone decodes at {:.1} tok/s, under the {:.1} asked",
                    one.rate_p50_tps, target.rate_tps
                )
            } else {
                format!(
                    "one student alone waits {:.2} s for a first token (p95), over the {:.2} s asked",
                    one.ttft_p95_s, target.ttft_p95_s
                )
            }),
        };
    }
    let (mut lo, mut lo_out) = (1u32, one);
    let mut hi = 2u32;
    let mut hi_out = None;
    while hi <= MAX_STUDENTS {
        let o = run(hi);
        if o.meets(target) {
            (lo, lo_out) = (hi, o);
            hi = hi.saturating_mul(2);
        } else {
            hi_out = Some(o);
            break;
        }
    }
    let Some(mut above) = hi_out else {
        return Capacity {
            students: lo,
            at: Some(lo_out),
            above: None,
            reason: None,
        };
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let o = run(mid);
        if o.meets(target) {
            (lo, lo_out) = (mid, o);
        } else {
            (hi, above) = (mid, o);
        }
    }
    Capacity {
        students: lo,
        at: Some(lo_out),
        above: Some(above),
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn engine(slots: u32, t1: f64, t4: f64, prefill: f64) -> Engine {
        Engine {
            model: "m".into(),
            slots,
            steps: vec![(1, t1), (4, t4)],
            prefill_tps: prefill,
            n_batch: 512,
            source: "test".into(),
        }
    }

    fn class(students: u32) -> Class {
        Class {
            students,
            think_s: 5.0,
            prompt_tokens: 64,
            answer_tokens: 65,
        }
    }

    #[test]
    fn steps_are_straight_between_and_beyond_the_points() {
        let e = engine(8, 0.010, 0.040, 1000.0);
        assert_eq!(e.step_s(0), 0.0);
        assert!((e.step_s(1) - 0.010).abs() < 1e-12);
        assert!((e.step_s(2) - 0.020).abs() < 1e-12);
        assert!((e.step_s(8) - 0.080).abs() < 1e-12);
        let one = Engine {
            steps: vec![(1, 0.01)],
            ..e
        };
        assert!((one.step_s(3) - 0.03).abs() < 1e-12);
    }

    #[test]
    fn one_student_alone_gets_the_single_stream_figures() {
        // 10 ms a step, 1,000 prompt tokens a second: a 64-token prompt's
        // first token after 64 ms, 64 more tokens at 100 tok/s.
        let o = simulate(&[engine(4, 0.010, 0.040, 1000.0)], &class(1));
        assert!((o.ttft_p95_s - 0.064).abs() < 1e-9, "{o:?}");
        assert!((o.rate_p50_tps - 100.0).abs() < 1e-6, "{o:?}");
        assert_eq!(o.requests, REQUESTS);
    }

    #[test]
    fn more_students_wait_longer_and_the_capacity_is_where_the_target_breaks() {
        let e = [engine(4, 0.010, 0.025, 1000.0)];
        let small = simulate(&e, &class(4));
        let big = simulate(&e, &class(64));
        assert!(big.ttft_p95_s > small.ttft_p95_s, "{small:?} {big:?}");
        assert!(big.output_tps > small.output_tps);
        let target = Target {
            rate_tps: 10.0,
            ttft_p95_s: 2.0,
        };
        let c = capacity(&e, &class(0), &target);
        assert!(c.students > 4 && c.students < 200, "{c:?}");
        assert!(c.at.unwrap().meets(&target));
        let above = c.above.unwrap();
        assert!(!above.meets(&target) && above.students == c.students + 1);
        // The same answer every time: the simulation is seeded.
        assert_eq!(capacity(&e, &class(0), &target).students, c.students);
    }

    #[test]
    fn the_bound_is_throughput_near_saturation() {
        // 4 slots, a 65-token answer at 4 sequences takes 64 x 25 ms plus a
        // 64 ms prompt: ~1.66 s, so at most ~2.4 answers a second; with
        // 5 s of thought between them a student asks every ~6.7 s, and
        // past ~16 students the queue grows without bound.
        let e = [engine(4, 0.010, 0.025, 1000.0)];
        let c = capacity(
            &e,
            &class(0),
            &Target {
                rate_tps: 10.0,
                ttft_p95_s: 2.0,
            },
        );
        assert!((8..=17).contains(&c.students), "{c:?}");
    }

    #[test]
    fn classes_beyond_the_bounds_are_refused() {
        assert!(class(10).check().is_ok());
        assert!(
            class(MAX_STUDENTS + 1)
                .check()
                .unwrap_err()
                .contains("students")
        );
        let long = Class {
            answer_tokens: MAX_TOKENS + 1,
            ..class(1)
        };
        assert!(long.check().unwrap_err().contains("answers"));
        let never = Class {
            think_s: f64::INFINITY,
            ..class(1)
        };
        assert!(never.check().is_err());
    }

    #[test]
    fn a_predicted_engine_samples_few_batches_however_many_slots() {
        let shape = crate::catalog::find("llama-3.1-8b").unwrap();
        let hw = crate::hardware::find("gb10").unwrap();
        let r = PlanRequest {
            users: 1_000_000,
            ..Default::default()
        };
        let e = Engine::predicted(&shape, &hw, &r).unwrap();
        assert!(
            e.steps.len() <= 21 && e.steps.last().unwrap().0 == 1_000_000,
            "{:?}",
            e.steps.len()
        );
        // The samples agree with the formulas between them.
        let direct = crate::estimate::decode_step(&shape, &hw, &r, 3).unwrap().0;
        assert!(
            (e.step_s(3) - direct).abs() / direct < 0.25,
            "{} {direct}",
            e.step_s(3)
        );
    }

    #[test]
    fn a_target_one_student_cannot_meet_says_why() {
        let e = [engine(4, 0.2, 0.5, 1000.0)];
        let c = capacity(
            &e,
            &class(0),
            &Target {
                rate_tps: 10.0,
                ttft_p95_s: 2.0,
            },
        );
        assert_eq!(c.students, 0);
        assert!(c.reason.unwrap().contains("5.0 tok/s"));
    }

    #[test]
    fn two_models_take_turns() {
        // The same students over two engines that share the box take as
        // long as over one of them with half the students each... no less.
        let e = engine(4, 0.010, 0.025, 1000.0);
        let one = simulate(std::slice::from_ref(&e), &class(8));
        let two = simulate(&[e.clone(), e], &class(16));
        assert!(two.ttft_p95_s >= one.ttft_p95_s, "{one:?} {two:?}");
        assert!(two.rate_p50_tps <= one.rate_p50_tps);
    }
}
