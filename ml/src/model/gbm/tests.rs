use super::*;

#[test]
fn flat_trees_predict_what_the_booster_does_and_refuse_a_loop() {
    // A noisy problem with missing values.
    let n = 3000;
    let mut rows = Rows::default();
    for i in 0..n {
        let mut r = [0.0; WIDTH];
        for (c, v) in r.iter_mut().enumerate() {
            *v = if (i + c) % 17 == 0 {
                f64::NAN
            } else {
                draw(7, i as u64, c as i64)
            };
        }
        let y = 3.0 * r[0] + if r[1].is_nan() { 1.0 } else { r[1] } + draw(9, i as u64, 0);
        rows.x.push(r);
        rows.y.push(y);
        rows.weight.push(1.0);
    }
    let data = rows.columns();
    let matrix = Matrix::new(&data, n, WIDTH);
    let mut b = PerpetualBooster::default()
        .set_objective(Objective::QuantileLoss {
            quantile: Some(0.9),
        })
        .set_budget(0.5)
        .set_iteration_limit(Some(10));
    b.fit(&matrix, &rows.y, Some(&rows.weight), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let flat = Flat::of(&b).unwrap_or_else(|e| panic!("{e}"));
    assert!(flat.nodes.len() > flat.roots.len(), "the trees split");
    for (p, r) in b.predict(&matrix, false).iter().zip(&rows.x) {
        assert_eq!(p.to_bits(), flat.predict(r).to_bits());
    }
    // A damaged artifact must not size the arrays by a node's number, point into a gap
    // (a NaN forecast) or loop back to the root.
    let mut far = b.clone();
    let root = far.trees[0].nodes[&0].clone();
    far.trees[0].nodes.insert(1 << 40, root);
    assert!(matches!(Flat::of(&far), Err(ModelError::Artifact(_))));
    let mut gap = b.clone();
    let leaf = gap.trees[0]
        .nodes
        .iter()
        .find(|(_, n)| n.is_leaf)
        .map(|(k, _)| *k)
        .unwrap_or_else(|| panic!("a leaf"));
    gap.trees[0].nodes.remove(&leaf);
    assert!(matches!(Flat::of(&gap), Err(ModelError::Artifact(_))));
    let node = b.trees[0]
        .nodes
        .values_mut()
        .find(|n| !n.is_leaf)
        .unwrap_or_else(|| panic!("a split"));
    node.left_child = 0;
    assert!(matches!(Flat::of(&b), Err(ModelError::Artifact(_))));
}
