//! The initial assignment of shard replicas to nodes.
//!
//! A *domain* is a set of nodes that may hold at most one replica of a
//! shard: an isolation group, or a single node when the cluster declares no
//! groups. The assignment is done in two steps, both deterministic:
//!
//! 1. **Domain totals** by water-filling: every domain's total is
//!    proportional to its node count, except that no domain can hold more
//!    than one replica of each shard (`num_shards`); domains whose share
//!    would exceed that are capped and the rest is shared out again. Shares
//!    are rounded by largest remainder (ties: the earlier domain).
//! 2. **Shard by shard**, each shard takes `rf` distinct domains, those
//!    with the most replicas still to take first (so a domain that has as
//!    many left as there are shards left is never skipped, and every total
//!    is met exactly); within a domain the least loaded node, so a domain's
//!    nodes stay within one of each other. Ties go to the domain and node
//!    sharing the fewest shards with the replicas already chosen: a node's
//!    shards then have their other replicas spread over many nodes, so when
//!    it leaves, its shards can move to many nodes (a fixed wrap-around
//!    would pair each node with the same one or two others).

use crate::node::NodeId;

/// Replica totals per domain, for domains of `sizes[i]` nodes.
///
/// Requires `1 <= rf <= sizes.len()`, every size >= 1. The totals sum to
/// `num_shards * rf`, none exceeds `num_shards`, and every domain below
/// `num_shards` holds its proportional share rounded down or up.
pub(crate) fn domain_totals(sizes: &[usize], num_shards: usize, rf: usize) -> Vec<usize> {
    let s = num_shards as u128;
    let mut capped = vec![false; sizes.len()];
    // Replicas and nodes still to share among the uncapped domains.
    let (mut total, mut nodes) = (
        s * rf as u128,
        sizes.iter().map(|&n| n as u128).sum::<u128>(),
    );
    loop {
        let mut changed = false;
        for (i, &n) in sizes.iter().enumerate() {
            // Share total * n / nodes >= s: capped at s. Capping a domain never
            // lowers the others' per-node share, so one pass per round is enough.
            if !capped[i] && total * n as u128 >= s * nodes {
                capped[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        total = s * rf as u128 - s * capped.iter().filter(|&&c| c).count() as u128;
        nodes = sizes
            .iter()
            .zip(&capped)
            .filter(|(_, &c)| !c)
            .map(|(&n, _)| n as u128)
            .sum();
    }
    let mut totals = vec![0usize; sizes.len()];
    let mut remainders = Vec::new();
    let mut given = 0u128;
    for (i, &n) in sizes.iter().enumerate() {
        if capped[i] {
            totals[i] = num_shards;
        } else {
            // nodes > 0 here: an uncapped domain counts itself.
            let share = total * n as u128;
            totals[i] = (share / nodes) as usize;
            given += share / nodes;
            remainders.push((share % nodes, i));
        }
    }
    // Largest remainders first; equal remainders: the earlier domain. Only
    // domains with a non-zero remainder are reached (the leftover is less than
    // their count), so none rises above num_shards.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let leftover = (total - given) as usize;
    for &(_, i) in remainders.iter().take(leftover) {
        totals[i] += 1;
    }
    totals
}

/// The replicas of each shard: `result[shard]` lists `rf` distinct nodes,
/// no two from one domain. `domains` are non-empty, each sorted, in a fixed
/// order; `1 <= rf <= domains.len()`.
pub(crate) fn assign(domains: &[Vec<NodeId>], num_shards: usize, rf: usize) -> Vec<Vec<NodeId>> {
    let sizes: Vec<usize> = domains.iter().map(Vec::len).collect();
    // Replicas each domain still has to take.
    let mut quota = domain_totals(&sizes, num_shards, rf);
    // Nodes are numbered domain by domain.
    let offsets: Vec<usize> = sizes
        .iter()
        .scan(0, |acc, &n| {
            let o = *acc;
            *acc += n;
            Some(o)
        })
        .collect();
    let total_nodes: usize = sizes.iter().sum();
    let mut load = vec![0usize; total_nodes];
    // Shards each pair of nodes shares so far (n² counters: a few MiB for
    // the thousand nodes a large cluster has).
    let mut together = vec![0u32; total_nodes * total_nodes];
    let mut shards = Vec::with_capacity(num_shards);
    for _ in 0..num_shards {
        let mut chosen: Vec<usize> = Vec::with_capacity(rf);
        let mut used = vec![false; domains.len()];
        for _ in 0..rf {
            // Shards `node` shares with the replicas chosen for this one.
            let shared = |node: usize| -> u32 {
                chosen
                    .iter()
                    .map(|&c| together[c * total_nodes + node])
                    .sum()
            };
            // Within a domain: the least loaded node (so the domain's nodes
            // stay within one of each other), then the one sharing the fewest
            // shards with the replicas already chosen (so a node's shards have
            // their other replicas spread over many nodes, and the load of a
            // node that leaves spreads too), then the first.
            let pick = |d: usize| -> (usize, u32) {
                let node = (offsets[d]..offsets[d] + sizes[d])
                    .min_by_key(|&n| (load[n], shared(n), n))
                    .expect("domains are not empty");
                (node, shared(node))
            };
            // The domain with the most replicas still to take. With R shards
            // left every quota is at most R and they sum to R × rf, so at most
            // rf domains have R left, and they are taken first: no quota is
            // ever left that the remaining shards cannot absorb, and at least
            // rf domains have some left.
            let most = (0..domains.len())
                .filter(|&d| !used[d])
                .map(|d| quota[d])
                .max()
                .filter(|&q| q > 0)
                .expect("a domain with quota left: the quotas sum to the slots left");
            let (d, node) = (0..domains.len())
                .filter(|&d| !used[d] && quota[d] == most)
                .map(|d| (d, pick(d)))
                .min_by_key(|&(d, (_, shared))| (shared, d))
                .map(|(d, (node, _))| (d, node))
                .expect("the domain with the most quota left");
            used[d] = true;
            quota[d] -= 1;
            load[node] += 1;
            for &c in &chosen {
                together[c * total_nodes + node] += 1;
                together[node * total_nodes + c] += 1;
            }
            chosen.push(node);
        }
        shards.push(
            chosen
                .into_iter()
                .map(|n| {
                    let d = offsets.partition_point(|&o| o <= n) - 1;
                    domains[d][n - offsets[d]].clone()
                })
                .collect(),
        );
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn totals_share_by_node_count_and_cap_at_one_per_shard() {
        assert_eq!(domain_totals(&[1, 1, 1], 64, 3), vec![64, 64, 64]);
        assert_eq!(domain_totals(&[1, 1, 1, 1], 10, 3), vec![8, 8, 7, 7]);
        // Group of 4 nodes would take 12 of 16, but holds at most 8.
        assert_eq!(domain_totals(&[4, 1, 1], 8, 2), vec![8, 4, 4]);
        assert_eq!(domain_totals(&[2, 2], 5, 1), vec![3, 2]);
    }

    proptest! {
        #[test]
        fn totals_are_water_filled(
            sizes in prop::collection::vec(1usize..6, 1..7),
            num_shards in 1usize..100,
            rf_pick in 0usize..7,
        ) {
            let rf = rf_pick % sizes.len() + 1;
            let totals = domain_totals(&sizes, num_shards, rf);
            prop_assert_eq!(totals.iter().sum::<usize>(), num_shards * rf);
            for (g, &lg) in totals.iter().enumerate() {
                prop_assert!(lg <= num_shards);
                if lg < num_shards {
                    // g could take more: no domain h is ahead of it by more
                    // than rounding, per node: (Lg+1)/ng > (Lh-1)/nh.
                    for (h, &lh) in totals.iter().enumerate() {
                        prop_assert!(
                            (lg + 1) * sizes[h] + sizes[g] > lh * sizes[g],
                            "{:?} -> {:?}: {} vs {}", sizes, totals, g, h
                        );
                    }
                }
            }
        }
    }
}
