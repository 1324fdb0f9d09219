//! Property test: random op sequences against the embedded store's ops and a plain model
//! (hash maps and sorted vectors), with virtual time, so expiry, versions, the expiry index and
//! the order-preserving score encoding are all checked against something obviously right.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use redb::ReadableDatabase;

use super::codec::{bits_score, Kind};
use super::ops::{apply, Op, Reply, Tables};
use super::read::{live_entry, zrange};
use crate::{Expect, Written};

const KEYS: [&str; 3] = ["a", "b", "c"];
const SETS: [&str; 2] = ["x", "y"];
const SCORES: [f64; 5] = [f64::NEG_INFINITY, -1.5, 0.0, 2.0, f64::INFINITY];

#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    Advance(u64),
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Any),
        Just(Expect::Absent),
        (1u64..4).prop_map(Expect::Version)
    ]
}

fn ttl() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), (1u64..60).prop_map(Some)]
}

fn step() -> impl Strategy<Value = Step> {
    let key = (0..KEYS.len()).prop_map(|i| KEYS[i].to_owned());
    let set = || (0..SETS.len()).prop_map(|i| SETS[i].to_owned());
    let member = (0..5u8).prop_map(|i| format!("m{i}"));
    let score = (0..SCORES.len()).prop_map(|i| SCORES[i]);
    prop_oneof![
        4 => (key.clone(), any::<u8>(), expect(), ttl()).prop_map(|(key, v, expect, ttl_ms)| Step::Op(Op::Put {
            key,
            value: Bytes::from(vec![v]),
            expect,
            ttl_ms
        })),
        1 => (key.clone(), expect()).prop_map(|(key, expect)| Step::Op(Op::Delete { key, expect })),
        1 => (key.clone(), 1u64..60, expect()).prop_map(|(key, ttl_ms, expect)| Step::Op(Op::Touch { key, ttl_ms, expect })),
        1 => (key, -3i64..4, ttl()).prop_map(|(key, by, ttl_ms)| Step::Op(Op::Incr { key, by, ttl_ms })),
        2 => (set(), member.clone(), score.clone())
            .prop_map(|(key, m, s)| Step::Op(Op::Zadd { key, members: vec![(m, s)] })),
        2 => (set(), member).prop_map(|(key, m)| Step::Op(Op::Zrem { key, members: vec![m] })),
        2 => (set(), set(), score.clone(), 0usize..4, score).prop_map(|(src, dst, max_score, count, dst_score)| {
            Step::Op(Op::Zmove { src, dst, max_score, count, dst_score })
        }),
        1 => (0u64..40).prop_map(Step::Advance),
        1 => Just(Step::Op(Op::Sweep { limit: 2 })),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Value(Vec<u8>, u64),
    Counter(i64),
}

#[derive(Default)]
struct Model {
    kv: HashMap<String, (Cell, u64)>,
    sets: HashMap<String, Vec<(String, f64)>>,
}

impl Model {
    fn live(&self, key: &str, now: u64) -> Option<&(Cell, u64)> {
        self.kv.get(key).filter(|(_, exp)| *exp == 0 || *exp > now)
    }

    fn sorted(&self, set: &str) -> Vec<(String, f64)> {
        let mut v = self.sets.get(set).cloned().unwrap_or_default();
        v.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// What the store should answer; `None` where it should refuse (WrongType).
    fn apply(&mut self, op: &Op, now: u64) -> Option<String> {
        let exp = |ttl: Option<u64>| ttl.map_or(0, |t| now + t);
        Some(match op {
            Op::Put {
                key,
                value,
                expect,
                ttl_ms,
            } => {
                let cur = match self.live(key, now) {
                    Some((Cell::Value(_, v), _)) => Some(*v),
                    Some(_) => return None,
                    None => None,
                };
                let ok = match expect {
                    Expect::Any => true,
                    Expect::Absent => cur.is_none(),
                    Expect::Version(v) => cur == Some(*v),
                };
                if !ok {
                    return Some(format!("{:?}", Written::Conflict(cur)));
                }
                let v = cur.unwrap_or(0) + 1;
                self.kv
                    .insert(key.clone(), (Cell::Value(value.to_vec(), v), exp(*ttl_ms)));
                format!("{:?}", Written::Ok(v))
            }
            Op::Delete { key, expect } => {
                let ok = match (expect, self.live(key, now)) {
                    (_, None) | (Expect::Absent, _) => false,
                    (Expect::Any, Some(_)) => true,
                    (Expect::Version(v), Some((Cell::Value(_, cur), _))) => v == cur,
                    (Expect::Version(_), Some(_)) => return None,
                };
                if ok {
                    self.kv.remove(key);
                }
                format!("{ok}")
            }
            Op::Touch {
                key,
                ttl_ms,
                expect,
            } => {
                let ok = match (expect, self.live(key, now)) {
                    (_, None) | (Expect::Absent, _) => false,
                    (Expect::Any, Some(_)) => true,
                    (Expect::Version(v), Some((Cell::Value(_, cur), _))) => v == cur,
                    (Expect::Version(_), Some(_)) => return None,
                };
                if ok {
                    self.kv.get_mut(key).unwrap().1 = now + ttl_ms;
                }
                format!("{ok}")
            }
            Op::Incr { key, by, ttl_ms } => {
                let (n, old_exp) = match self.live(key, now) {
                    Some((Cell::Counter(n), e)) => (*n, *e),
                    Some(_) => return None,
                    None => (0, 0),
                };
                let e = if ttl_ms.is_some() {
                    exp(*ttl_ms)
                } else {
                    old_exp
                };
                self.kv.insert(key.clone(), (Cell::Counter(n + by), e));
                format!("{}", n + by)
            }
            Op::Zadd { key, members } => {
                let set = self.sets.entry(key.clone()).or_default();
                for (m, s) in members {
                    set.retain(|(x, _)| x != m);
                    set.push((m.clone(), if *s == 0.0 { 0.0 } else { *s }));
                }
                format!("{}", members.len())
            }
            Op::Zrem { key, members } => {
                let set = self.sets.entry(key.clone()).or_default();
                let before = set.len();
                set.retain(|(x, _)| !members.contains(x));
                format!("{}", before - set.len())
            }
            Op::Zmove {
                src,
                dst,
                max_score,
                count,
                dst_score,
            } => {
                let picked: Vec<_> = self
                    .sorted(src)
                    .into_iter()
                    .filter(|(_, s)| s <= max_score)
                    .take(*count)
                    .collect();
                for (m, _) in &picked {
                    self.sets.get_mut(src).unwrap().retain(|(x, _)| x != m);
                    let d = self.sets.entry(dst.clone()).or_default();
                    d.retain(|(x, _)| x != m);
                    d.push((m.clone(), *dst_score));
                }
                format!("{picked:?}")
            }
            // Not generated here: the conformance suite covers them on every backend.
            Op::Sweep { .. }
            | Op::Acquire { .. }
            | Op::Gcra { .. }
            | Op::Txn(_)
            | Op::QueueStep(_) => return Some(String::new()),
        })
    }
}

fn show(op: &Op, reply: Reply) -> String {
    match (op, reply) {
        (Op::Sweep { .. }, _) => String::new(),
        (_, Reply::Written(w)) => format!("{w:?}"),
        (_, Reply::Bool(b)) => format!("{b}"),
        (_, Reply::Int(n)) => format!("{n}"),
        (_, Reply::Count(n)) => format!("{n}"),
        (_, Reply::Members(m)) => format!("{m:?}"),
        (_, other) => format!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn embedded_ops_match_the_model(steps in proptest::collection::vec(step(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("m.redb")).unwrap();
        let mut model = Model::default();
        let mut now = 1_000u64;
        for step in steps {
            let op = match step {
                Step::Advance(ms) => { now += ms; continue; }
                Step::Op(op) => op,
            };
            // One transaction per op, as a batch of one: also exercises commit and reopen of tables.
            let mut txn = db.begin_write().unwrap();
            // No fsync per step: durability is not what this test checks, and it keeps it fast.
            txn.set_durability(redb::Durability::None).unwrap();
            let got = {
                let mut t = Tables::open(&txn).unwrap();
                apply(&mut t, &op, now)
            };
            txn.commit().unwrap();
            let want = model.apply(&op, now);
            match (got, want) {
                (Ok(reply), Some(want)) => prop_assert_eq!(show(&op, reply), want, "op {:?} at {}", op, now),
                (Err(crate::StoreError::WrongType { .. }), None) => {}
                (got, want) => prop_assert!(false, "op {:?}: store {:?}, model {:?}", op, got, want),
            }
            // Everything observable agrees after every step.
            let txn = db.begin_read().unwrap();
            let kv = txn.open_table(super::codec::KV).unwrap();
            for key in KEYS {
                let store = live_entry(&kv, key, now).unwrap().map(|e| match e.kind {
                    Kind::Value => Cell::Value(e.payload.clone(), e.version),
                    _ => Cell::Counter(e.int(key).unwrap()),
                });
                prop_assert_eq!(store, model.live(key, now).map(|(c, _)| c.clone()), "key {}", key);
            }
            let zo = txn.open_table(super::codec::ZO).unwrap();
            for set in SETS {
                let store: Vec<_> = zrange(&zo, set, f64::NEG_INFINITY, f64::INFINITY, 100).unwrap()
                    .into_iter().map(|(m, bits)| (m, bits_score(bits))).collect();
                prop_assert_eq!(store, model.sorted(set), "set {}", set);
            }
        }
    }
}

/// Two rate-limit calls 1.1 ms apart that land in one write batch (one batch clock): each is
/// decided at its own call time, as Redis decides each at its `TIME`.
#[test]
fn gcra_calls_in_one_batch_count_at_their_own_times() {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("g.redb")).unwrap();
    let params = crate::Gcra {
        emission_interval: std::time::Duration::from_millis(1),
        burst_tolerance: std::time::Duration::ZERO,
    };
    let batch_now_ms = 5_000u64;
    let mut txn = db.begin_write().unwrap();
    txn.set_durability(redb::Durability::None).unwrap();
    let replies: Vec<Reply> = {
        let mut t = Tables::open(&txn).unwrap();
        [4_998_000u64, 4_999_100]
            .into_iter()
            .map(|now_us| {
                let op = Op::Gcra {
                    key: "rl".to_owned(),
                    params,
                    now_us,
                };
                apply(&mut t, &op, batch_now_ms).unwrap()
            })
            .collect()
    };
    txn.commit().unwrap();
    for r in replies {
        assert!(
            matches!(r, Reply::Gcra(crate::GcraDecision::Allow { .. })),
            "{r:?}"
        );
    }
}
