//! Progress of long operations: bars on a terminal (indicatif), plain lines
//! otherwise. Libraries send events; only this module decides how they look.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use berth_engine::image::archive::LoadEvent;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output;

/// Shows layer progress for `load`.
pub struct Layers {
    quiet: bool,
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
}

fn short(layer: &str) -> &str {
    let l = layer.strip_prefix("sha256:").unwrap_or(layer);
    &l[..l.len().min(12)]
}

impl Layers {
    /// Bars when stderr is a terminal and not `quiet`.
    pub fn new(quiet: bool) -> Layers {
        let bars = (!quiet && std::io::stderr().is_terminal()).then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        Layers { quiet, bars }
    }

    /// Handles one event (called from the loader's worker threads).
    pub fn event(&self, ev: LoadEvent) {
        if self.quiet {
            return;
        }
        let Some((multi, bars)) = &self.bars else {
            if let LoadEvent::LayerDone { layer, cached } = ev {
                let what = if cached { "Already exists" } else { "Loaded" };
                eprintln!("{}: {what}", short(&layer));
            }
            return;
        };
        let mut bars = bars.lock().expect("progress lock");
        match ev {
            LoadEvent::LayerStart { layer, size } => {
                let pb = multi.add(ProgressBar::new(size));
                pb.set_style(
                    ProgressStyle::with_template(
                        "{prefix}: {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("valid template"),
                );
                pb.set_prefix(short(&layer).to_string());
                bars.insert(layer, pb);
            }
            LoadEvent::LayerProgress { layer, done } => {
                if let Some(pb) = bars.get(&layer) {
                    pb.set_position(done);
                }
            }
            LoadEvent::LayerDone { layer, cached } => {
                if let Some(pb) = bars.remove(&layer) {
                    let what = if cached { "Already exists" } else { "Loaded" };
                    let size = output::size(pb.length().unwrap_or(0));
                    pb.finish_and_clear();
                    let _ = multi.println(format!("{}: {what} ({size})", short(&layer)));
                }
            }
        }
    }
}
