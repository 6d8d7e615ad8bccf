//! The `census` preset: a census-like population with skewed protected attributes, a
//! missing-value share, features that carry signal and a group-dependent label.
//!
//! Every row is a function of the seed and its row number alone: row `i` takes the
//! `DRAWS` uniforms at position `i · DRAWS` of one ChaCha8 stream, so any range of rows
//! can be generated on its own (files are written in parallel) and the rows do not
//! depend on how they are cut into files. The shares, effects and label model are
//! documented in docs/synth.md, which the tests check the data against.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int8Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Uniforms each row consumes, whatever its values (so a row's position in the stream
/// is its number times this).
const DRAWS: u128 = 16;

pub const SEX: &[(&str, f64)] = &[("Male", 0.66), ("Female", 0.33)];
/// Rows whose `sex` is null.
pub const SEX_MISSING: f64 = 0.01;
pub const RACE: &[(&str, f64)] = &[
    ("White", 0.68),
    ("Black", 0.12),
    ("Asian-Pac-Islander", 0.07),
    ("Other", 0.06),
    ("Amer-Indian-Eskimo", 0.03),
];
/// Rows whose `race` is null.
pub const RACE_MISSING: f64 = 0.04;
/// Age bands and the ages each holds (inclusive).
pub const AGE_BAND: &[(&str, f64, i32, i32)] = &[
    ("18-24", 0.12, 18, 24),
    ("25-34", 0.24, 25, 34),
    ("35-44", 0.22, 35, 44),
    ("45-54", 0.19, 45, 54),
    ("55-64", 0.15, 55, 64),
    ("65+", 0.08, 65, 90),
];
/// Occupations with their shares among men and among women (and the rest), and their
/// effect on the label's log-odds.
pub const OCCUPATION: &[(&str, f64, f64, f64)] = &[
    ("Craft-repair", 0.20, 0.03, -0.2),
    ("Exec-managerial", 0.14, 0.12, 1.0),
    ("Prof-specialty", 0.13, 0.16, 1.1),
    ("Sales", 0.12, 0.12, 0.2),
    ("Adm-clerical", 0.07, 0.26, -0.4),
    ("Machine-op-inspct", 0.10, 0.06, -0.5),
    ("Other-service", 0.10, 0.17, -1.2),
    ("Transport-moving", 0.14, 0.08, -0.3),
];
/// Log-odds of a positive label: an intercept, then per feature (see `row`).
pub const INTERCEPT: f64 = -2.6;
pub const MALE_EFFECT: f64 = 0.7;
pub const WHITE_EFFECT: f64 = 0.3;

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("sex", DataType::Utf8, true),
        Field::new("race", DataType::Utf8, true),
        Field::new("age_band", DataType::Utf8, false),
        Field::new("age", DataType::Int32, false),
        Field::new("education_num", DataType::Int32, false),
        Field::new("occupation", DataType::Utf8, false),
        Field::new("hours_per_week", DataType::Float32, false),
        Field::new("capital_gain", DataType::Float64, false),
        Field::new("weight", DataType::Float64, false),
        Field::new("label", DataType::Int8, false),
    ]))
}

/// A uniform in [0, 1) from 53 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The index whose cumulative share first exceeds `u` (the last one otherwise).
fn pick(u: f64, shares: impl Iterator<Item = f64>) -> usize {
    let mut acc = 0.0;
    let mut last = 0;
    for (i, s) in shares.enumerate() {
        acc += s;
        last = i;
        if u < acc {
            return i;
        }
    }
    last
}

/// A standard normal from two uniforms (Box–Muller).
fn normal(u1: f64, u2: f64) -> f64 {
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Rows `start..start + n`, as one batch.
pub fn batch(seed: u64, start: u64, n: usize) -> RecordBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // words are 32 bits: two per draw
    rng.set_word_pos(u128::from(start) * DRAWS * 2);
    let mut id = Vec::with_capacity(n);
    let mut sex = Vec::with_capacity(n);
    let mut race = Vec::with_capacity(n);
    let mut band = Vec::with_capacity(n);
    let mut age = Vec::with_capacity(n);
    let mut edu = Vec::with_capacity(n);
    let mut occupation = Vec::with_capacity(n);
    let mut hours = Vec::with_capacity(n);
    let mut gain = Vec::with_capacity(n);
    let mut weight = Vec::with_capacity(n);
    let mut label = Vec::with_capacity(n);
    let mut u = [0f64; DRAWS as usize];
    for i in 0..n as u64 {
        for x in u.iter_mut() {
            *x = unit(rng.next_u64());
        }
        id.push((start + i) as i64);
        // sex and race: a missing share first, then the shares of the rest
        let s = (u[0] >= SEX_MISSING).then(|| {
            pick(
                (u[0] - SEX_MISSING) / (1.0 - SEX_MISSING),
                SEX.iter().map(|v| v.1 / 0.99),
            )
        });
        let r = (u[1] >= RACE_MISSING).then(|| {
            pick(
                (u[1] - RACE_MISSING) / (1.0 - RACE_MISSING),
                RACE.iter().map(|v| v.1 / 0.96),
            )
        });
        let b = pick(u[2], AGE_BAND.iter().map(|v| v.1));
        let (_, _, lo, hi) = AGE_BAND[b];
        let a = lo + ((hi - lo + 1) as f64 * u[3]) as i32;
        let male = s == Some(0);
        let o = pick(
            u[4],
            OCCUPATION.iter().map(|v| if male { v.1 } else { v.2 }),
        );
        // education: higher in professional occupations
        let e = (10.0 + 2.5 * normal(u[5], u[6]) + if o <= 2 { 1.5 } else { 0.0 })
            .round()
            .clamp(1.0, 16.0) as i32;
        let h = (40.0 + 10.0 * normal(u[7], u[8]) + if male { 3.0 } else { -3.0 }).clamp(1.0, 99.0);
        let g = if u[9] < 0.08 {
            (-(1.0 - u[10]).ln() * 6000.0).round()
        } else {
            0.0
        };
        // Gamma(2, 0.5): the sum of two exponentials of mean 0.5
        let w = (0.5 * (-(1.0 - u[11]).ln() - (1.0 - u[12]).ln())).max(1e-3);
        let mid_age = (2..=4).contains(&b);
        let logit = INTERCEPT
            + if male { MALE_EFFECT } else { 0.0 }
            + if r == Some(0) { WHITE_EFFECT } else { 0.0 }
            + OCCUPATION[o].3
            + 0.35 * f64::from(e - 10)
            + 0.03 * (h - 40.0)
            + if mid_age { 0.6 } else { 0.0 }
            + if g > 0.0 { 1.5 } else { 0.0 };
        let y = u[13] < 1.0 / (1.0 + (-logit).exp());
        sex.push(s.map(|i| SEX[i].0));
        race.push(r.map(|i| RACE[i].0));
        band.push(AGE_BAND[b].0);
        age.push(a);
        edu.push(e);
        occupation.push(OCCUPATION[o].0);
        hours.push(h as f32);
        gain.push(g);
        weight.push(w);
        label.push(y as i8);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(id)),
        Arc::new(StringArray::from(sex)),
        Arc::new(StringArray::from(race)),
        Arc::new(StringArray::from(band)),
        Arc::new(Int32Array::from(age)),
        Arc::new(Int32Array::from(edu)),
        Arc::new(StringArray::from(occupation)),
        Arc::new(Float32Array::from(hours)),
        Arc::new(Float64Array::from(gain)),
        Arc::new(Float64Array::from(weight)),
        Arc::new(Int8Array::from(label)),
    ];
    RecordBatch::try_new(schema(), columns).expect("the columns match the schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::compute::concat_batches;

    /// Rows depend on their number only: any cut into batches gives the same rows.
    #[test]
    fn rows_do_not_depend_on_the_cut() {
        let whole = batch(7, 0, 1000);
        let parts: Vec<_> = [(0u64, 1usize), (1, 332), (333, 667)]
            .iter()
            .map(|&(s, n)| batch(7, s, n))
            .collect();
        assert_eq!(concat_batches(&schema(), &parts).unwrap(), whole);
        assert_ne!(batch(8, 0, 1000), whole);
    }

    /// The shares and the missing share are the documented ones (within 4 standard
    /// errors), and the label depends on the groups.
    #[test]
    fn shares_follow_the_preset() {
        let n = 200_000;
        let b = batch(1, 0, n);
        let sex = b.column(1).as_string::<i32>();
        let share = |f: &dyn Fn(usize) -> bool| (0..n).filter(|&i| f(i)).count() as f64 / n as f64;
        let close = |got: f64, want: f64| {
            let se = (want * (1.0 - want) / n as f64).sqrt();
            assert!((got - want).abs() < 4.0 * se, "{got} vs {want}");
        };
        close(share(&|i| sex.is_null(i)), SEX_MISSING);
        close(
            share(&|i| sex.is_valid(i) && sex.value(i) == "Female"),
            0.33,
        );
        let race = b.column(2).as_string::<i32>();
        close(share(&|i| race.is_null(i)), RACE_MISSING);
        close(
            share(&|i| race.is_valid(i) && race.value(i) == "Black"),
            0.12,
        );
        let label = b.column(10).as_primitive::<arrow::datatypes::Int8Type>();
        let rate = |f: &dyn Fn(usize) -> bool| {
            let rows: Vec<usize> = (0..n).filter(|&i| f(i)).collect();
            rows.iter().filter(|&&i| label.value(i) == 1).count() as f64 / rows.len() as f64
        };
        let (men, women) = (
            rate(&|i| sex.is_valid(i) && sex.value(i) == "Male"),
            rate(&|i| sex.is_valid(i) && sex.value(i) == "Female"),
        );
        assert!(men > women + 0.1, "men {men}, women {women}");
        assert!((0.1..0.5).contains(&rate(&|_| true)));
    }
}
