//! A booster's trees copied into flat arrays, for prediction.

use perpetual::PerpetualBooster;

use crate::features::WIDTH;
use crate::model::ModelError;

/// A booster's trees in flat arrays, for prediction: perpetual keeps a tree's nodes in a
/// hash map and hashes at every node a row passes (a third of inference time). It predicts
/// what `PerpetualBooster::predict` does, summed in the same order (a test holds them equal).
#[derive(Debug, Clone, Default)]
pub(super) struct Flat {
    base: f64,
    /// Each tree's root in `nodes`.
    pub(super) roots: Vec<usize>,
    pub(super) nodes: Vec<FlatNode>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct FlatNode {
    /// The feature split on; `LEAF` for a leaf.
    feature: usize,
    /// The split value (left when below), or the leaf's weight.
    value: f64,
    left: usize,
    right: usize,
    /// Where a missing (`NaN`) value goes.
    missing: usize,
}

const LEAF: usize = usize::MAX;

impl Flat {
    /// `booster`'s trees; a booster this model cannot have made (categorical splits, a
    /// linear head, a missing value other than `NaN`, nodes out of order) is refused.
    pub(super) fn of(booster: &PerpetualBooster) -> Result<Self, ModelError> {
        let refuse = |why: &str| Err(ModelError::Artifact(format!("a booster {why}")));
        if booster.regression_head.is_some() || !booster.cfg.missing.is_nan() {
            return refuse("with a linear head or a missing value other than NaN");
        }
        let mut out = Self {
            base: booster.base_score,
            ..Self::default()
        };
        for tree in booster.get_prediction_trees() {
            let offset = out.nodes.len();
            // perpetual numbers a tree's nodes from 0 with gaps where it pruned; a number far
            // beyond the count is damage (and would size the arrays by it).
            let n = tree.nodes.keys().max().map_or(0, |m| m.saturating_add(1));
            if !tree.nodes.contains_key(&0) || n > 4 * tree.nodes.len() + 16 {
                return refuse("with a tree without a root or with nodes numbered out of range");
            }
            let unreachable = FlatNode {
                feature: LEAF,
                value: f64::NAN,
                left: 0,
                right: 0,
                missing: 0,
            };
            out.roots.push(offset);
            out.nodes.resize(offset + n, unreachable);
            for (&i, node) in &tree.nodes {
                out.nodes[offset + i] = if node.is_leaf {
                    FlatNode {
                        value: f64::from(node.weight_value),
                        ..unreachable
                    }
                } else {
                    // Children after their parent (as perpetual numbers them): no loops.
                    let children = [node.left_child, node.right_child, node.missing_node];
                    if node.left_cats.is_some()
                        || node.split_feature >= WIDTH
                        || children
                            .iter()
                            .any(|c| *c <= i || !tree.nodes.contains_key(c))
                    {
                        return refuse("with a node this model cannot have");
                    }
                    FlatNode {
                        feature: node.split_feature,
                        value: node.split_value,
                        left: offset + node.left_child,
                        right: offset + node.right_child,
                        missing: offset + node.missing_node,
                    }
                };
            }
        }
        Ok(out)
    }

    /// Tree `t`'s value for `row`.
    pub(super) fn tree(&self, t: usize, row: &[f64; WIDTH]) -> f64 {
        let mut i = self.roots[t];
        loop {
            let node = &self.nodes[i];
            if node.feature == LEAF {
                return node.value;
            }
            let v = row[node.feature];
            i = if v.is_nan() {
                node.missing
            } else if v < node.value {
                node.left
            } else {
                node.right
            };
        }
    }

    /// The booster's prediction for `row`.
    pub(super) fn predict(&self, row: &[f64; WIDTH]) -> f64 {
        (0..self.roots.len()).fold(self.base, |p, t| p + self.tree(t, row))
    }
}
