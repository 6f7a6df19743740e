//! Continuous batching on one llama.cpp context.
//!
//! One OS thread owns the context. Each step it builds one batch holding the
//! next token of every sequence that is generating plus as much pending
//! prompt prefill as still fits (prompts are fed in chunks, so a long prompt
//! cannot stall the others), decodes it, and samples one token for every
//! sequence whose logits were computed. Up to `parallel` sequences are active;
//! the rest wait in a FIFO. A client that has gone away (its receiver was
//! dropped) frees its slot before the next step.
//!
//! LoRA adapters (`--lora-dir`): llama.cpp applies adapters to a whole
//! context, so a step decodes only the sequences of one adapter (or of the
//! base); when several are active, steps take turns among them. A
//! sequence's KV is always computed under its own adapter, and a slot's
//! cached prefix is reused only by a request with the same adapter.
//!
//! Pausing (elastic admission, `--no-preempt` turns it off). Requests may
//! name their user (the gateway sets OpenAI's `user` field to an opaque id
//! of the signed-in user). The rules:
//!
//! * **Who runs next**: when a slot frees, the waiting request or paused
//!   sequence whose user has the fewest sequences running goes first, then
//!   the one whose user holds the fewest requests (here, or in the
//!   gateway: its `aula_backlog`); ties go to a paused sequence, then to
//!   the earliest arrival (without users, first come, first served).
//! * **Who is paused**: when no slot is free, the waiting request first in
//!   line (as above), whose user runs `r` sequences and holds `h` requests,
//!   may pause a sequence of a user who runs at least `r + 2`, or — when
//!   `r` is 0 — of a user who holds more than `h`: a user with
//!   nothing running is not kept waiting by a user with a backlog, while
//!   users with one request each (a class chatting) never pause each
//!   other. Of those, the youngest sequence of the user running the most
//!   (then holding the most) is paused, and the request takes its slot.
//!   Neither condition can hold the other way round after the pause, so
//!   two users never take turns pausing each other.
//!   The paused sequence's KV (and its sampler, grammar and text
//!   state) is copied to host memory (`llama_state_seq_get_data`), its slot
//!   goes to the request (which reuses the KV of the prefix they share, the
//!   chat template's system prompt at least), and it resumes in a slot that frees
//!   (`llama_state_seq_set_data`) where it stopped: nothing is recomputed,
//!   and its answer is the same stream, only later. A paused sequence only
//!   takes free slots; it never pauses another.
//! * **Each answer is paused for at most `MAX_PAUSE` (10 s) in all**: it
//!   may be paused again, each time a newcomer finds every slot held, while
//!   its time paused so far is under `MAX_PAUSE`; once a paused sequence's
//!   time reaches it, it goes before everything else in line and is not
//!   paused again, so that a stream of other users' requests cannot hold
//!   it back for long (an answer that stays silent would also meet the
//!   gateway's idle timeout). Pausing only once per answer was tried
//!   first: with long answers, every slot soon held one already paused,
//!   and newcomers waited for slots again (BENCHMARKS.md, item 3).
//! * **Bounds**: at most `parallel` sequences are paused at once, each
//!   holding at most one slot's KV, so paused state is at most the size of
//!   the KV cache itself. A request without a user is never paused and
//!   never pauses anyone; a paused sequence whose client leaves is dropped.

use crate::output::{Pushed, TextAssembler};
use aula_protocol::{FinishReason, SamplingParams, Usage};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use tokio::sync::mpsc::UnboundedSender;

/// What the scheduler sends back to the request handler.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done { finish: FinishReason, usage: Usage },
    Error(String),
}

pub struct Job {
    pub tokens: Vec<LlamaToken>,
    /// Already resolved against the context: prompt + max_tokens fits.
    pub max_tokens: u32,
    pub params: SamplingParams,
    /// The grammar the output must follow (`response_format`, a required
    /// tool call), compiled for this sequence ([`crate::constraint`]).
    pub grammar: Option<llguidance::Matcher>,
    /// Render control tokens as text (harmony's `<|channel|>` ...).
    pub special: bool,
    /// The LoRA adapter (index into the scheduler's) this request runs with.
    pub adapter: Option<usize>,
    /// Whose request this is (OpenAI's `user`), for pausing; None is never
    /// paused and never pauses anyone.
    pub user: Option<String>,
    /// The user's requests for this model in the gateway (`aula_backlog`,
    /// itself included; 1 when not given).
    pub backlog: usize,
    pub tx: UnboundedSender<Event>,
}

/// Steps an adapter's sequences run before the next adapter's turn.
const STEPS_PER_TURN: usize = 4;

/// A LoRA adapter loaded on the base model, chosen per request by name.
pub struct Adapter {
    pub name: String,
    pub adapter: llama_cpp_2::model::LlamaLoraAdapter,
    /// Its file's size (what it adds to the engine's memory).
    pub bytes: u64,
}

/// Counters shared with the HTTP side (for `/health` and admission).
#[derive(Debug, Default)]
pub struct Stats {
    pub busy: AtomicUsize,
    pub queued: AtomicUsize,
    /// Prompt tokens whose KV was reused from the slot's previous request.
    pub reused_tokens: std::sync::atomic::AtomicU64,
    /// Sequences paused now (their KV in host memory).
    pub paused: AtomicUsize,
    /// Sequences paused, and resumed, since the engine started.
    pub pauses: AtomicU64,
    pub resumes: AtomicU64,
    /// Microseconds the scheduler spent copying paused sequences' KV out
    /// and back in (the context waits meanwhile).
    pub pause_copy_us: AtomicU64,
    /// Decode steps since the engine started; the tokens they fed (prompt
    /// chunks and generated tokens), the sequences they sampled (one
    /// token each), and the time spent in llama.cpp's decode.
    pub steps: AtomicU64,
    pub step_tokens: AtomicU64,
    pub step_samples: AtomicU64,
    pub decode_us: AtomicU64,
}

struct Slot {
    seq: i32,
    job: Job,
    /// Prompt tokens already fed to the context.
    fed: usize,
    /// Next position in this sequence.
    pos: i32,
    /// Token sampled last step, to be fed this step.
    next: Option<LlamaToken>,
    sampler: LlamaSampler,
    /// Plain greedy decoding (no grammar, penalties or temperature): the
    /// token is the highest logit, read straight from the logits instead
    /// of through the sampler chain (which first copies every logit into a
    /// candidate array: 3 MB a token for a 262k-token vocabulary).
    greedy: bool,
    generated: u32,
    text: TextAssembler,
    /// Index of this sequence's logits in the current batch.
    logits_at: Option<i32>,
    /// Generated tokens already in the KV cache.
    fed_generated: Vec<LlamaToken>,
    /// When it was admitted (a counter): the youngest is paused first.
    admitted: u64,
    /// Time it has spent paused so far: it may be paused again while this
    /// is under `MAX_PAUSE`.
    time_paused: std::time::Duration,
}

/// A sequence taken out of its slot: everything it needs to go on.
struct Paused {
    slot: Slot,
    kv: llama_cpp_2::context::session::SeqState,
    since: std::time::Instant,
}

/// A sequence paused this long in all resumes before anything else, and is
/// not paused again.
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(10);

/// The next in line for a slot: a paused sequence (its index in the paused
/// list) or a waiting request (its index in the queue).
#[derive(Clone, Copy)]
enum Next {
    Paused(usize),
    Waiting(usize),
}

impl Slot {
    /// The tokens whose KV this sequence holds, in order.
    fn kv_tokens(&self) -> Vec<LlamaToken> {
        let mut t = self.job.tokens[..self.fed].to_vec();
        t.extend_from_slice(&self.fed_generated);
        t
    }
}

/// Per user: sequences running, and requests held — what it has here
/// (running, paused, waiting), or the backlog the gateway reported with any
/// of them, if larger.
#[derive(Default, Clone, Copy)]
struct Load {
    running: usize,
    here: usize,
    backlog: usize,
}

impl Load {
    fn held(&self) -> usize {
        self.here.max(self.backlog)
    }
}

type Tally<'a> = std::collections::HashMap<&'a Option<String>, Load>;

fn tally<'a>(
    slots: &'a [Option<Slot>],
    paused: &'a [Paused],
    waiting: &'a VecDeque<Job>,
) -> Tally<'a> {
    let mut t = Tally::new();
    for s in slots.iter().flatten() {
        t.entry(&s.job.user).or_default().running += 1;
    }
    let jobs = slots
        .iter()
        .flatten()
        .map(|s| &s.job)
        .chain(paused.iter().map(|p| &p.slot.job))
        .chain(waiting.iter());
    for j in jobs {
        let l = t.entry(&j.user).or_default();
        l.here += 1;
        l.backlog = l.backlog.max(j.backlog);
    }
    t
}

/// Who gets the next free slot: a sequence paused for `MAX_PAUSE` or more
/// in all;
/// else the paused sequence or waiting request whose user runs the fewest
/// sequences, then holds the fewest requests; ties to a paused one, then
/// to the earliest.
fn next_in_line(
    slots: &[Option<Slot>],
    paused: &[Paused],
    waiting: &VecDeque<Job>,
) -> Option<Next> {
    if paused.is_empty() && waiting.is_empty() {
        return None;
    }
    let t = tally(slots, paused, waiting);
    let load = |u| t.get(u).copied().unwrap_or_default();
    let from_paused = paused.iter().enumerate().map(|(k, p)| {
        let l = load(&p.slot.job.user);
        let in_time = p.slot.time_paused + p.since.elapsed() < MAX_PAUSE;
        let key = (in_time, l.running, l.held(), 0, p.slot.admitted as usize);
        (key, Next::Paused(k))
    });
    let from_waiting = waiting.iter().enumerate().map(|(k, j)| {
        let l = load(&j.user);
        ((true, l.running, l.held(), 1, k), Next::Waiting(k))
    });
    from_paused
        .chain(from_waiting)
        .min_by_key(|(key, _)| *key)
        .map(|(_, n)| n)
}

/// The waiting request first in line: its user runs the fewest sequences,
/// then holds the fewest requests; ties to the earliest.
fn first_waiting(t: &Tally, waiting: &VecDeque<Job>) -> Option<usize> {
    (0..waiting.len()).min_by_key(|k| {
        let l = t.get(&waiting[*k].user).copied().unwrap_or_default();
        (l.running, l.held(), *k)
    })
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

pub struct Scheduler<'m> {
    pub model: Arc<LlamaModel>,
    pub ctx: LlamaContext<'m>,
    pub parallel: usize,
    pub n_batch: usize,
    pub stats: Arc<Stats>,
    /// Keep each slot's KV after a request and reuse its longest common
    /// prefix with the next prompt (off for sliding-window models, whose
    /// caches drop old positions).
    pub reuse_prefix: bool,
    /// Adapters requests may name; the context runs one (or none) at a time.
    pub adapters: Vec<Adapter>,
    /// The adapter set on the context now.
    pub current_adapter: Option<usize>,
    /// Round-robin among the adapters that have work.
    pub turn: usize,
    /// Pause an over-share user's youngest sequence for another user's
    /// request (module docs).
    pub preempt: bool,
}

/// The greedy choice: the first of the highest logits, as llama.cpp's
/// greedy sampler picks it (a NaN is never higher; all NaN: token 0).
fn first_highest(logits: &[f32]) -> LlamaToken {
    // Two passes the compiler vectorises: the highest value, then where it
    // first is.
    const LANES: usize = 16;
    let Some(&first) = logits.first().filter(|f| !f.is_nan()) else {
        return LlamaToken(0);
    };
    let mut lanes = [first; LANES];
    let mut chunks = logits.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            if v > *m {
                *m = v;
            }
        }
    }
    let mut best = first;
    for &v in lanes.iter().chain(chunks.remainder()) {
        if v > best {
            best = v;
        }
    }
    let at = logits.iter().position(|&v| v == best).unwrap_or(0);
    LlamaToken(at as i32)
}

/// `max_tokens` bounds the penalty window: llama.cpp allocates it up front.
fn sampler_for(
    p: &SamplingParams,
    grammar: Option<llguidance::Matcher>,
    n_vocab: i32,
    max_tokens: u32,
) -> LlamaSampler {
    let mut chain = Vec::new();
    // The grammar first: every later step picks among the tokens it allows.
    if let Some(m) = grammar {
        chain.push(LlamaSampler::from(m));
    }
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        // Penalise over the whole generation so far, as OpenAI does.
        chain.push(LlamaSampler::penalties(
            n_vocab,
            i32::try_from(max_tokens).unwrap_or(i32::MAX),
            1.0,
            p.frequency_penalty,
            p.presence_penalty,
        ));
    }
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k as i32));
        }
        if p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, 1));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        let seed = p.seed.unwrap_or_else(rand::random);
        chain.push(LlamaSampler::dist(seed));
    }
    LlamaSampler::chain_simple(chain)
}

impl Scheduler<'_> {
    /// Run until every sender of `jobs` is gone.
    pub fn run(mut self, jobs: Receiver<Job>) {
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut slots: Vec<Option<Slot>> = (0..self.parallel).map(|_| None).collect();
        // What each slot's KV stream holds while the slot is free.
        let mut cached: Vec<Vec<LlamaToken>> = vec![Vec::new(); self.parallel];
        // Which adapter computed each slot's cached KV.
        let mut cached_adapter: Vec<Option<usize>> = vec![None; self.parallel];
        let mut batch = LlamaBatch::new(self.n_batch, self.parallel as i32);
        let n_vocab = self.model.n_vocab();
        let mut paused: Vec<Paused> = Vec::new();
        let mut admissions: u64 = 0;
        loop {
            // 1. Take new work; block only when there is nothing to do.
            let idle = slots.iter().all(Option::is_none) && waiting.is_empty() && paused.is_empty();
            if idle {
                match jobs.recv_timeout(std::time::Duration::from_millis(500)) {
                    Ok(j) => waiting.push_back(j),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(j) => waiting.push_back(j),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        if slots.iter().all(Option::is_none)
                            && waiting.is_empty()
                            && paused.is_empty()
                        {
                            return;
                        }
                        break;
                    }
                }
            }
            // 2. Free slots whose client left; drop queued requests whose client left.
            for slot in slots.iter_mut() {
                if slot.as_ref().is_some_and(|s| s.job.tx.is_closed())
                    && let Some(s) = slot.take()
                {
                    self.release(s.seq);
                }
            }
            waiting.retain(|j| !j.tx.is_closed());
            paused.retain(|p| !p.slot.job.tx.is_closed());
            // 3. Resume paused sequences and admit waiting requests into
            //    free slots, in the order of the module docs; with no slot
            //    free, pause an over-share user's youngest sequence for the
            //    next in line when the rules allow.
            let mut paused_for: Option<Next> = None;
            loop {
                let next = if slots.iter().all(Option::is_some) {
                    // No slot free: the first waiting request in line may
                    // pause someone, and then takes the slot itself.
                    if !self.preempt {
                        break;
                    }
                    let Some(k) = self.pause_for(
                        &mut slots,
                        &mut paused,
                        &waiting,
                        &mut cached,
                        &mut cached_adapter,
                    ) else {
                        break;
                    };
                    paused_for = Some(Next::Waiting(k));
                    continue;
                } else if let Some(n) = paused_for.take() {
                    n
                } else if let Some(n) = next_in_line(&slots, &paused, &waiting) {
                    n
                } else {
                    break;
                };
                admissions += 1;
                match next {
                    Next::Paused(k) => {
                        let p = paused.swap_remove(k);
                        // The free slot with the least cached (its cache is lost).
                        let Some(i) = (0..slots.len())
                            .filter(|i| slots[*i].is_none())
                            .min_by_key(|i| cached[*i].len())
                        else {
                            break;
                        };
                        self.release(i as i32);
                        cached[i].clear();
                        cached_adapter[i] = p.slot.job.adapter;
                        let mut s = p.slot;
                        let copy = std::time::Instant::now();
                        let restored = self.ctx.state_seq_set(&p.kv, i as i32);
                        self.stats
                            .pause_copy_us
                            .fetch_add(copy.elapsed().as_micros() as u64, Ordering::Relaxed);
                        if let Err(e) = restored {
                            let _ = s.job.tx.send(Event::Error(format!(
                                "llama.cpp could not resume a paused sequence: {e}"
                            )));
                            self.release(i as i32);
                            continue;
                        }
                        s.seq = i as i32;
                        s.logits_at = None;
                        s.time_paused += p.since.elapsed();
                        slots[i] = Some(s);
                        self.stats.resumes.fetch_add(1, Ordering::Relaxed);
                    }
                    Next::Waiting(k) => {
                        let Some(mut job) = waiting.remove(k) else {
                            break;
                        };
                        // The free slot whose cached tokens share the longest
                        // prefix with the prompt.
                        let Some(i) =
                            (0..slots.len())
                                .filter(|i| slots[*i].is_none())
                                .max_by_key(|i| {
                                    if cached_adapter[*i] == job.adapter {
                                        common_prefix(&cached[*i], &job.tokens)
                                    } else {
                                        0
                                    }
                                })
                        else {
                            break;
                        };
                        let seq = i as i32;
                        // At least the last prompt token is decoded again, for its logits.
                        let mut reuse =
                            common_prefix(&cached[i], &job.tokens).min(job.tokens.len() - 1);
                        if !self.reuse_prefix || cached_adapter[i] != job.adapter {
                            reuse = 0;
                        }
                        if reuse == 0
                            || self
                                .ctx
                                .kv_cache_seq_rm(seq, Some(reuse as u32), None)
                                .is_err()
                        {
                            reuse = 0;
                            self.release(seq);
                        }
                        cached[i].clear();
                        cached_adapter[i] = job.adapter;
                        self.stats
                            .reused_tokens
                            .fetch_add(reuse as u64, Ordering::Relaxed);
                        let greedy = job.grammar.is_none()
                            && job.params.temperature <= 0.0
                            && job.params.presence_penalty == 0.0
                            && job.params.frequency_penalty == 0.0;
                        slots[i] = Some(Slot {
                            seq,
                            greedy,
                            sampler: sampler_for(
                                &job.params,
                                job.grammar.take(),
                                n_vocab,
                                job.max_tokens,
                            ),
                            text: TextAssembler::new(job.params.stop.clone()),
                            job,
                            fed: reuse,
                            pos: reuse as i32,
                            next: None,
                            generated: 0,
                            logits_at: None,
                            fed_generated: Vec::new(),
                            admitted: admissions,
                            time_paused: std::time::Duration::ZERO,
                        });
                    }
                }
            }
            self.stats.paused.store(paused.len(), Ordering::Relaxed);
            let busy = slots.iter().filter(|s| s.is_some()).count();
            self.stats.busy.store(busy, Ordering::Relaxed);
            self.stats.queued.store(waiting.len(), Ordering::Relaxed);
            if busy == 0 {
                continue;
            }
            // 4. Build the batch: generating sequences first, then prefill
            //    chunks — of this step's adapter only.
            let group = self.next_group(&slots);
            if let Err(msg) = self.use_adapter(group) {
                for slot in slots.iter_mut() {
                    if slot.as_ref().is_some_and(|s| s.job.adapter == group) {
                        self.fail(slot, &msg);
                    }
                }
                continue;
            }
            batch.clear();
            let mut failed: Vec<(usize, String)> = Vec::new();
            for (i, slot) in slots.iter_mut().enumerate() {
                let Some(s) = slot else { continue };
                s.logits_at = None;
                if s.job.adapter != group {
                    continue;
                }
                if let Some(tok) = s.next {
                    let at = batch.n_tokens();
                    if let Err(e) = batch.add(tok, s.pos, &[s.seq], true) {
                        failed.push((i, format!("batch: {e}")));
                        continue;
                    }
                    s.fed_generated.push(tok);
                    s.logits_at = Some(at);
                }
            }
            for (i, slot) in slots.iter_mut().enumerate() {
                let Some(s) = slot else { continue };
                if s.job.adapter != group || s.next.is_some() || s.fed >= s.job.tokens.len() {
                    continue;
                }
                let room = self.n_batch.saturating_sub(batch.n_tokens() as usize);
                if room == 0 {
                    break;
                }
                let end = (s.fed + room).min(s.job.tokens.len());
                for k in s.fed..end {
                    let last = k + 1 == s.job.tokens.len();
                    let at = batch.n_tokens();
                    if let Err(e) = batch.add(s.job.tokens[k], k as i32, &[s.seq], last) {
                        failed.push((i, format!("batch: {e}")));
                        break;
                    }
                    if last {
                        s.logits_at = Some(at);
                    }
                }
                s.pos = end as i32;
                s.fed = end;
            }
            for (i, msg) in failed {
                self.fail(&mut slots[i], &msg);
            }
            if batch.n_tokens() == 0 {
                continue;
            }
            // 5. Decode.
            let started = std::time::Instant::now();
            let decoded = self.ctx.decode(&mut batch);
            self.count_step(&slots, batch.n_tokens(), started.elapsed());
            if let Err(e) = decoded {
                let msg = format!("llama.cpp decode failed: {e}");
                tracing::error!("{msg}");
                for slot in slots.iter_mut() {
                    if slot.as_ref().is_some_and(|s| {
                        s.job.adapter == group
                            && (s.logits_at.is_some() || s.next.is_some() || s.fed > 0)
                    }) {
                        self.fail(slot, &msg);
                    }
                }
                continue;
            }
            // 6. Sample one token per sequence that has logits.
            for slot in slots.iter_mut() {
                let Some(s) = slot else { continue };
                let Some(at) = s.logits_at else { continue };
                if s.next.take().is_some() {
                    s.pos += 1;
                }
                let tok = if s.greedy {
                    first_highest(self.ctx.get_logits_ith(at))
                } else {
                    s.sampler.sample(&self.ctx, at)
                };
                let vocab = self.model.vocab();
                let finish = if vocab.is_eog(tok) {
                    Some(FinishReason::Stop)
                } else {
                    s.generated += 1;
                    let piece = vocab.token_to_piece(tok, s.job.special, None);
                    match s.text.push(&piece) {
                        Pushed::Text(t) => {
                            if !t.is_empty() {
                                let _ = s.job.tx.send(Event::Text(t));
                            }
                            (s.generated >= s.job.max_tokens).then_some(FinishReason::Length)
                        }
                        Pushed::Stopped(t) => {
                            if !t.is_empty() {
                                let _ = s.job.tx.send(Event::Text(t));
                            }
                            Some(FinishReason::Stop)
                        }
                    }
                };
                match finish {
                    None => s.next = Some(tok),
                    Some(finish) => {
                        let rest = if finish == FinishReason::Length {
                            s.text.finish()
                        } else {
                            String::new()
                        };
                        if !rest.is_empty() {
                            let _ = s.job.tx.send(Event::Text(rest));
                        }
                        let usage = Usage::new(s.job.tokens.len() as u32, s.generated);
                        let _ = s.job.tx.send(Event::Done { finish, usage });
                        cached[s.seq as usize] = s.kv_tokens();
                        *slot = None;
                    }
                }
            }
        }
    }

    /// The adapter whose sequences run this step: the active ones take
    /// turns (the base counts as one).
    fn next_group(&mut self, slots: &[Option<Slot>]) -> Option<usize> {
        let mut groups: Vec<Option<usize>> = Vec::new();
        for s in slots.iter().flatten() {
            if !groups.contains(&s.job.adapter) {
                groups.push(s.job.adapter);
            }
        }
        if groups.len() <= 1 {
            return groups.first().copied().flatten();
        }
        groups.sort();
        // Switching adapters rebuilds llama.cpp's graph: each group keeps
        // the context for STEPS_PER_TURN steps while others wait.
        self.turn = self.turn.wrapping_add(1);
        groups[(self.turn / STEPS_PER_TURN) % groups.len()]
    }

    /// Set `adapter` on the context (or none), when it is not already.
    fn use_adapter(&mut self, adapter: Option<usize>) -> Result<(), String> {
        if adapter == self.current_adapter {
            return Ok(());
        }
        let result = match adapter {
            Some(i) => match self.adapters.get_mut(i) {
                Some(a) => self
                    .ctx
                    .lora_adapter_set(&mut a.adapter, 1.0)
                    .map_err(|e| format!("llama.cpp could not apply the adapter {}: {e}", a.name)),
                None => Err(format!("no adapter {i}")),
            },
            None => match self.adapters.first_mut() {
                Some(a) => self
                    .ctx
                    .lora_adapter_remove(&mut a.adapter)
                    .map_err(|e| format!("llama.cpp could not remove the adapters: {e}")),
                None => Ok(()),
            },
        };
        if result.is_ok() {
            self.current_adapter = adapter;
        }
        result
    }

    /// For the first waiting request in line, pause a sequence when the
    /// module docs' rule allows it: the request's index in `waiting` if so.
    fn pause_for(
        &mut self,
        slots: &mut [Option<Slot>],
        paused: &mut Vec<Paused>,
        waiting: &VecDeque<Job>,
        cached: &mut [Vec<LlamaToken>],
        cached_adapter: &mut [Option<usize>],
    ) -> Option<usize> {
        // Requests without a user (straight to the engine, first come,
        // first served) cost no tally.
        if paused.len() >= self.parallel || !waiting.iter().any(|j| j.user.is_some()) {
            return None;
        }
        let (k, i) = {
            let t = tally(slots, paused, waiting);
            let k = first_waiting(&t, waiting)?;
            let user = &waiting[k].user;
            user.as_ref()?;
            let load = |u| t.get(u).copied().unwrap_or_default();
            let mine = load(user);
            // The module docs' rule, for each sequence that may be paused.
            let (i, ..) = slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
                .filter(|(_, s)| {
                    s.job.user.is_some() && s.job.user != *user && s.time_paused < MAX_PAUSE
                })
                .map(|(i, s)| (i, load(&s.job.user), s.admitted))
                .filter(|(_, theirs, _)| {
                    theirs.running >= mine.running + 2
                        || (mine.running == 0 && theirs.held() > mine.held())
                })
                .max_by_key(|(_, theirs, admitted)| (theirs.running, theirs.held(), *admitted))?;
            (k, i)
        };
        let copy = std::time::Instant::now();
        let kv = self.ctx.state_seq_get(
            i as i32,
            llama_cpp_2::context::session::LlamaStateSeqFlags::empty(),
        );
        self.stats
            .pause_copy_us
            .fetch_add(copy.elapsed().as_micros() as u64, Ordering::Relaxed);
        let kv = match kv {
            Ok(kv) => kv,
            Err(e) => {
                tracing::warn!("could not pause a sequence (it keeps its slot): {e}");
                return None;
            }
        };
        let slot = slots[i].take()?;
        // The slot keeps the paused sequence's KV as its cache, as after a
        // finished request: the request that takes the slot reuses their
        // common prefix (at least the chat template's system prompt) and
        // drops the rest.
        cached[i] = slot.kv_tokens();
        cached_adapter[i] = slot.job.adapter;
        paused.push(Paused {
            slot,
            kv,
            since: std::time::Instant::now(),
        });
        self.stats.pauses.fetch_add(1, Ordering::Relaxed);
        Some(k)
    }

    fn count_step(&self, slots: &[Option<Slot>], tokens: i32, took: std::time::Duration) {
        let st = &self.stats;
        st.steps.fetch_add(1, Ordering::Relaxed);
        st.step_tokens
            .fetch_add(tokens.max(0) as u64, Ordering::Relaxed);
        let sampled = slots
            .iter()
            .flatten()
            .filter(|s| s.logits_at.is_some())
            .count();
        st.step_samples.fetch_add(sampled as u64, Ordering::Relaxed);
        st.decode_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn release(&mut self, seq: i32) {
        let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
    }

    fn fail(&mut self, slot: &mut Option<Slot>, msg: &str) {
        if let Some(s) = slot.take() {
            let _ = s.job.tx.send(Event::Error(msg.to_string()));
            self.release(s.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_highest;

    /// llama.cpp's greedy sampler: the first index whose logit is higher
    /// than every earlier one's.
    fn reference(logits: &[f32]) -> i32 {
        let mut selected = 0;
        for i in 1..logits.len() {
            if logits[i] > logits[selected] {
                selected = i;
            }
        }
        selected as i32
    }

    #[test]
    fn the_greedy_token_is_the_one_llama_cpp_picks() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [1, 2, 15, 16, 17, 31, 33, 1000, 49_152, 262_144] {
            for _ in 0..20 {
                // Few distinct values, so ties are common; a NaN or an
                // infinity now and then.
                let logits: Vec<f32> = (0..len)
                    .map(|_| match next() % 1000 {
                        0 => f32::NAN,
                        1 => f32::INFINITY,
                        2 => f32::NEG_INFINITY,
                        3 => -0.0,
                        r => (r % 37) as f32 - 18.0,
                    })
                    .collect();
                assert_eq!(first_highest(&logits).0, reference(&logits), "len {len}");
            }
        }
        // The first of equal highest; a leading NaN wins, as in llama.cpp.
        assert_eq!(first_highest(&[1.0, 3.0, 2.0, 3.0]).0, 1);
        assert_eq!(first_highest(&[f32::NAN, 3.0]).0, 0);
        assert_eq!(first_highest(&[0.0, f32::NAN, 1.0]).0, 2);
        assert_eq!(first_highest(&[0.0, -0.0]).0, 0);
        assert_eq!(first_highest(&[-0.0, 0.0]).0, 0);
        assert_eq!(first_highest(&[]).0, 0);
    }
}

/// What greedy decoding costs per token on a 262,144-token vocabulary
/// (Gemma 3): llama.cpp's sampler path (every logit copied into a
/// candidate array, then the greedy sampler over it) against
/// `first_highest`. A measurement, not a check:
/// `cargo test --release -p aula-engine greedy_cost -- --ignored --nocapture`
#[cfg(test)]
mod cost {
    use super::first_highest;
    use llama_cpp_2::sampling::LlamaSampler;
    use llama_cpp_2::token::LlamaToken;
    use llama_cpp_2::token::data::LlamaTokenData;
    use llama_cpp_2::token::data_array::LlamaTokenDataArray;

    #[test]
    #[ignore]
    fn greedy_cost() {
        let n = 262_144;
        let logits: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 0.01).collect();
        let mut greedy = LlamaSampler::greedy();
        let rounds = 500;
        for round in 0..3 {
            let t = std::time::Instant::now();
            let mut a = 0;
            for _ in 0..rounds {
                let mut cur = LlamaTokenDataArray::from_iter(
                    logits
                        .iter()
                        .enumerate()
                        .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
                    false,
                );
                greedy.apply(&mut cur);
                a = cur.selected_token().unwrap().0;
            }
            let sampler = t.elapsed() / rounds;
            let t = std::time::Instant::now();
            let mut b = 0;
            for _ in 0..rounds {
                b = first_highest(std::hint::black_box(&logits)).0;
            }
            let direct = t.elapsed() / rounds;
            assert_eq!(a, b);
            println!("round {round}: sampler path {sampler:?}, first_highest {direct:?} per token");
        }
    }
}
