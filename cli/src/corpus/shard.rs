//! This task's share of a corpus: `--shard I/N`, or the index and count of a Kubernetes
//! Indexed Job or a Slurm array.

use stablekeypoints::limits;
use stablekeypoints::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// This task's share of the work list: video `j` (0-based, in list order) when
/// `j mod count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole list.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> std::result::Result<Self, String> {
        limits::check(count, 1, limits::MAX_SHARDS).map_err(|e| format!("shard count {e}"))?;
        if index >= count {
            return Err(format!(
                "shard index {index} is not below the shard count {count} (indices are 0 to {})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    pub fn takes(&self, j: usize) -> bool {
        j % self.count == self.index
    }

    /// The videos of this shard, with their positions in the list.
    pub fn select<'a, T>(&self, list: &'a [T]) -> Vec<(usize, &'a T)> {
        list.iter()
            .enumerate()
            .filter(|(j, _)| self.takes(*j))
            .collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;
    /// `I/N`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("expected I/N (shard I of N, 0 <= I < N), got {s:?}");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i = i.trim().parse().map_err(|_| bad())?;
        let n = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n)
    }
}

/// Kubernetes Indexed Jobs: the pod's index (the Job's `completions` is the count).
pub const ENV_K8S_INDEX: &str = "JOB_COMPLETION_INDEX";
/// The shard count with [`ENV_K8S_INDEX`] (or to override Slurm's).
pub const ENV_SHARD_COUNT: &str = "SKP_SHARD_COUNT";
pub const ENV_SLURM_ID: &str = "SLURM_ARRAY_TASK_ID";
pub const ENV_SLURM_COUNT: &str = "SLURM_ARRAY_TASK_COUNT";

/// The shard and where it came from (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardChoice {
    pub shard: Shard,
    pub from: String,
}

/// Chooses the shard: `--shard I/N` wins; else `JOB_COMPLETION_INDEX` with `--shard-count`
/// or `SKP_SHARD_COUNT`; else `SLURM_ARRAY_TASK_ID` with the same count overrides or
/// `SLURM_ARRAY_TASK_COUNT`; else the whole list. `env` reads the environment.
pub fn choose_shard(
    flag: Option<Shard>,
    count_flag: Option<usize>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ShardChoice> {
    if let Some(shard) = flag {
        return Ok(ShardChoice {
            shard,
            from: format!("--shard {shard}"),
        });
    }
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let number = |name: &str| -> Result<Option<usize>> {
        match var(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Error::Invalid(format!("{name}={v:?}: not a non-negative whole number"))
            }),
        }
    };
    let count_override = match count_flag {
        Some(n) => Some((n, format!("--shard-count {n}"))),
        None => number(ENV_SHARD_COUNT)?.map(|n| (n, format!("{ENV_SHARD_COUNT}={n}"))),
    };
    let make = |index: usize, count: usize, from: String| {
        Shard::new(index, count)
            .map(|shard| ShardChoice {
                shard,
                from: from.clone(),
            })
            .map_err(|e| Error::Invalid(format!("{from}: {e}")))
    };
    if let Some(index) = number(ENV_K8S_INDEX)? {
        let Some((count, how)) = count_override else {
            return Err(Error::Invalid(format!(
                "{ENV_K8S_INDEX}={index} is set (a Kubernetes Indexed Job) but not the shard \
                 count: give --shard-count N or {ENV_SHARD_COUNT}=N (the Job's completions), \
                 or --shard I/N"
            )));
        };
        return make(index, count, format!("{ENV_K8S_INDEX}={index} and {how}"));
    }
    if let Some(id) = number(ENV_SLURM_ID)? {
        let (count, how) = match count_override {
            Some(c) => c,
            None => match number(ENV_SLURM_COUNT)? {
                Some(n) => (n, format!("{ENV_SLURM_COUNT}={n}")),
                None => {
                    return Err(Error::Invalid(format!(
                        "{ENV_SLURM_ID}={id} is set but not {ENV_SLURM_COUNT}: give \
                         --shard-count N or --shard I/N"
                    )))
                }
            },
        };
        // The task id is the index as it is: an array numbered 0 to N-1, rerun in part
        // (`--array=3,5`) with SKP_SHARD_COUNT=N, keeps every task's share.
        return make(id, count, format!("{ENV_SLURM_ID}={id} and {how}")).map_err(|e| {
            Error::Invalid(format!(
                "{e}; number the array 0 to N-1 (--array=0-{}) and set {ENV_SHARD_COUNT}=N when \
                 rerunning some of its tasks",
                count.saturating_sub(1)
            ))
        });
    }
    if let Some((_, how)) = count_override {
        return Err(Error::Invalid(format!(
            "{how} without {ENV_K8S_INDEX} or {ENV_SLURM_ID}: give --shard I/N, or run as a \
             task of a job array"
        )));
    }
    Ok(ShardChoice {
        shard: Shard::ALL,
        from: "no shard given: the whole list".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_list() {
        for n in 1..=9 {
            for len in [0, 1, 5, 17, 100] {
                let list: Vec<usize> = (0..len).collect();
                let mut seen = vec![0; len];
                for i in 0..n {
                    let shard = Shard::new(i, n).unwrap();
                    let mine = shard.select(&list);
                    // Round robin: sizes differ by at most one.
                    assert!(mine.len() == len / n || mine.len() == len / n + 1);
                    for &(j, &v) in &mine {
                        assert_eq!(j, v);
                        assert_eq!(v % n, i);
                        seen[v] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "n {n} len {len}: {seen:?}");
            }
        }
    }

    #[test]
    fn shard_flags_parse_and_name_the_problem() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(" 0 / 1 ".parse::<Shard>(), Ok(Shard::ALL));
        assert!("4/4".parse::<Shard>().unwrap_err().contains("not below"));
        assert!("1/0".parse::<Shard>().unwrap_err().contains("between 1"));
        assert!("3".parse::<Shard>().unwrap_err().contains("I/N"));
        assert!("a/2".parse::<Shard>().unwrap_err().contains("I/N"));
        assert_eq!(Shard::new(3, 8).unwrap().to_string(), "3/8");
    }

    #[test]
    fn the_shard_comes_from_the_flag_then_kubernetes_then_slurm() {
        let s = |i, n| Shard { index: i, count: n };
        let k8s = [(ENV_K8S_INDEX, "2"), (ENV_SHARD_COUNT, "5")];
        let slurm = [(ENV_SLURM_ID, "3"), (ENV_SLURM_COUNT, "4")];
        // An explicit flag wins over everything.
        let c = choose_shard(Some(s(1, 3)), None, env(&k8s)).unwrap();
        assert_eq!((c.shard, c.from.as_str()), (s(1, 3), "--shard 1/3"));
        let c = choose_shard(None, None, env(&k8s)).unwrap();
        assert_eq!(c.shard, s(2, 5));
        assert!(c.from.contains("JOB_COMPLETION_INDEX=2") && c.from.contains("SKP_SHARD_COUNT=5"));
        // --shard-count wins over the variable.
        let c = choose_shard(None, Some(7), env(&k8s)).unwrap();
        assert_eq!(c.shard, s(2, 7));
        // Kubernetes before Slurm.
        let both: Vec<_> = k8s.iter().chain(&slurm).copied().collect();
        assert_eq!(choose_shard(None, None, env(&both)).unwrap().shard, s(2, 5));
        assert_eq!(
            choose_shard(None, None, env(&slurm)).unwrap().shard,
            s(3, 4)
        );
        // A partial rerun of an array of 8 (--array=3,5: 2 tasks) keeps the shard with
        // SKP_SHARD_COUNT, and is refused without it rather than taking another share.
        let rerun = [
            (ENV_SLURM_ID, "5"),
            (ENV_SLURM_COUNT, "2"),
            (ENV_SHARD_COUNT, "8"),
        ];
        assert_eq!(
            choose_shard(None, None, env(&rerun)).unwrap().shard,
            s(5, 8)
        );
        let e = choose_shard(None, None, env(&rerun[..2]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not below the shard count 2") && e.contains("SKP_SHARD_COUNT"),
            "{e}"
        );
        // Nothing: the whole list.
        assert_eq!(
            choose_shard(None, None, env(&[])).unwrap().shard,
            Shard::ALL
        );
        // Errors name the variables.
        let err = |vars: &[(&str, &str)], count| {
            choose_shard(None, count, env(vars))
                .unwrap_err()
                .to_string()
        };
        let e = err(&[(ENV_K8S_INDEX, "1")], None);
        assert!(
            e.contains("JOB_COMPLETION_INDEX=1") && e.contains("--shard-count"),
            "{e}"
        );
        let e = err(&[(ENV_K8S_INDEX, "5"), (ENV_SHARD_COUNT, "5")], None);
        assert!(e.contains("not below the shard count 5"), "{e}");
        let e = err(&[(ENV_K8S_INDEX, "x")], None);
        assert!(e.contains("JOB_COMPLETION_INDEX=\"x\""), "{e}");
        let e = err(&[(ENV_SLURM_ID, "3")], None);
        assert!(e.contains(ENV_SLURM_COUNT), "{e}");
        let e = err(&[(ENV_SLURM_ID, "3"), (ENV_SLURM_COUNT, "3")], None);
        assert!(
            e.contains("not below the shard count 3") && e.contains("--array=0-2"),
            "{e}"
        );
        let e = err(&[], Some(4));
        assert!(e.contains("--shard-count 4 without"), "{e}");
    }
}
