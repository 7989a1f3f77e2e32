//! One model shared by many threads, each with its own session: results must be bit-identical to
//! single-threaded scoring; a model dropped by its owner stays valid while sessions hold it; a file
//! replaced on disk (write new, rename over) does not disturb a model mapped from the old one.

use ple_testkit as common;

use std::sync::Arc;

use common::*;
use ple::{Input, Model, Session};

/// Scores samples `start..start+len` of the fixture batch (inputs sliced per feature).
fn score_range(session: &mut Session, cols: &[Column], start: usize, len: usize, out: &mut [f32]) {
    let model = session.model().clone();
    let parts: Vec<Column> = model
        .inputs()
        .iter()
        .zip(cols)
        .map(|(f, c)| c.rows(f.values_per_sample(), start, start + len))
        .collect();
    let inputs: Vec<Input> = parts.iter().map(Column::as_input).collect();
    session.run(&inputs, len, out, None).unwrap();
}

#[test]
fn threads_share_one_model_bit_identically() {
    let dir = fixtures_dir().join("rechub_ple2");
    let model = Model::open(dir.join("model.ple")).unwrap();
    let (cols, batch) = load_inputs(&model, &dir);
    let ow = model.output_width();
    let (expected, _) = score(&model, &cols, batch);
    let cols = Arc::new(cols);
    let expected = Arc::new(expected);

    let threads = 8;
    let calls_per_thread = 1500;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let model = model.clone();
            let cols = cols.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                let mut session = Session::new(&model, batch).unwrap();
                let mut out = vec![0f32; batch * ow];
                let mut rng = common::synth::Rng(t as u64 + 1);
                for _ in 0..calls_per_thread {
                    let start = rng.below(batch as u64) as usize;
                    let len = 1 + rng.below((batch - start) as u64) as usize;
                    score_range(&mut session, &cols, start, len, &mut out[..len * ow]);
                    let want = &expected[start * ow..(start + len) * ow];
                    assert!(
                        out[..len * ow]
                            .iter()
                            .zip(want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "thread {t}: samples {start}..{} differ from single-threaded scoring",
                        start + len
                    );
                }
            })
        })
        .collect();
    // The owner lets go of its handle while the threads still score: they keep it alive.
    drop(model);
    for h in handles {
        h.join().expect("scoring thread panicked");
    }
}

#[test]
fn replacing_the_file_on_disk_does_not_disturb_a_loaded_model() {
    let src = fixtures_dir().join("rechub_ple2");
    let other = fixtures_dir().join("rechub_cgc");
    let tmp = std::env::temp_dir().join(format!("ple-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let live = tmp.join("live.ple");
    std::fs::copy(src.join("model.ple"), &live).unwrap();

    let old = Model::open(&live).unwrap();
    let (cols, batch) = load_inputs(&old, &src);
    let (before, _) = score(&old, &cols, batch);
    let cols = Arc::new(cols);

    // Scoring threads keep using the old model while the file is replaced and reopened.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (old, cols, stop, before) =
                (old.clone(), cols.clone(), stop.clone(), before.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 50 {
                    let (out, _) = score(&old, &cols, batch);
                    assert_eq!(out, before, "old model changed under a rename");
                    n += 1;
                }
                n
            })
        })
        .collect();

    // The safe deploy pattern: write the new file beside the old, rename over it, open it.
    let staged = tmp.join("live.ple.new");
    std::fs::copy(other.join("model.ple"), &staged).unwrap();
    std::fs::rename(&staged, &live).unwrap();
    let new = Model::open(&live).unwrap();
    assert_eq!(
        new.name(),
        Model::open(other.join("model.ple")).unwrap().name()
    );
    let (new_cols, new_batch) = load_inputs(&new, &other);
    let (new_out, _) = score(&new, &new_cols, new_batch);
    let (want, _) = score(
        &Model::open(other.join("model.ple")).unwrap(),
        &new_cols,
        new_batch,
    );
    assert_eq!(new_out, want);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        assert!(w.join().unwrap() >= 50);
    }
    drop(old);
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn in_memory_models_survive_the_file_being_truncated() {
    // `read_into_memory` is for filesystems where a file may be rewritten in place: the model
    // then owns its bytes, so truncating the file cannot fault the process.
    let src = fixtures_dir().join("rechub_mmoe");
    let tmp = std::env::temp_dir().join(format!("ple-inmem-{}.ple", std::process::id()));
    std::fs::copy(src.join("model.ple"), &tmp).unwrap();
    let opts = ple::LoadOptions {
        read_into_memory: true,
        ..Default::default()
    };
    let model = Model::open_with(&tmp, &opts).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_len(10)
        .unwrap();
    let (cols, batch) = load_inputs(&model, &src);
    let (out, _) = score(&model, &cols, batch);
    let expected = read_f64(&src.join("expected_ref.npy"));
    assert!(max_rel_err(&out, &expected) <= 1e-5);
    std::fs::remove_file(&tmp).ok();
}
