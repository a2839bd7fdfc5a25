//! Fitting the sync traffic to the link: a satellite measures its link to
//! central (bytes per second and round-trip time, from its own sync calls)
//! and says so in the `Chartsync-Link` header of every sync request. Both
//! sides then pick the zstd level of what they send ([`LinkEstimate::level`])
//! and size batches by bytes as well as by count
//! ([`LinkEstimate::batch_bytes`]), so a batch on a slow link takes about
//! `secs` seconds and a cut link costs at most one batch; a LAN keeps
//! 1,000 records a round trip at the level used before.
//!
//! Central tells how long it worked on a request (after reading its body)
//! in the `Chartsync-Work-Ms` reply header, so the satellite can tell the
//! time its bytes spent on the link from central's work.

/// The request header carrying the satellite's [`LinkEstimate`].
pub const LINK_HEADER: &str = "chartsync-link";
/// The reply header: milliseconds central worked on the request after its
/// body had arrived (decoding, storing, building and compressing the reply).
pub const WORK_HEADER: &str = "chartsync-work-ms";

/// The zstd level when nothing is known of the link, and the lowest used
/// (the LAN level, as measured when the envelope was designed: see
/// [`crate::envelope`]).
pub const DEFAULT_LEVEL: i32 = 6;

/// Default seconds of link time one batch may take (`[sync] batch_secs`).
pub const DEFAULT_BATCH_SECS: u32 = 30;
/// Most seconds a satellite may ask for.
pub const MAX_BATCH_SECS: u32 = 600;
/// Smallest byte budget of a batch (a batch also always holds at least one
/// record, whatever its size).
pub const MIN_BATCH_BYTES: usize = 16 << 10;

/// How many bytes of a batch's message (packs uncompressed, MessagePack)
/// one wire byte carries at worst, for the byte budget: git packs of
/// realistic records compress 3 to 6 times, so 3 leaves a batch shorter
/// than its seconds, never longer.
const RATIO: f64 = 3.0;

/// zstd levels considered, with the speed (bytes compressed per second)
/// and size (compressed bytes per byte) each had on the bench's realistic
/// records (1,000 records of about 2 KB as one frame, `zstd -N` on the
/// 2-core VM the benchmarks ran on; see `docs/benchmarks.md`).
const LEVELS: [(i32, f64, f64); 5] = [
    (6, 14.0e6, 0.187),
    (9, 12.5e6, 0.178),
    (12, 9.0e6, 0.167),
    (15, 1.35e6, 0.151),
    (19, 0.65e6, 0.141),
];

/// A link as measured by a satellite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEstimate {
    /// Bytes per second the link carried.
    pub bytes_per_sec: u64,
    /// Round-trip time, milliseconds.
    pub rtt_ms: u64,
    /// Seconds of link time one batch may take.
    pub batch_secs: u32,
}

/// Why a `Chartsync-Link` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Chartsync-Link must look like bw=32000;rtt=600;secs=30 (bytes per second, at least 100; round trip in ms; batch seconds 1 to {MAX_BATCH_SECS})"
)]
pub struct LinkHeaderError;

impl LinkEstimate {
    /// The header value: `bw=32000;rtt=600;secs=30`.
    pub fn encode(&self) -> String {
        format!(
            "bw={};rtt={};secs={}",
            self.bytes_per_sec, self.rtt_ms, self.batch_secs
        )
    }

    /// Parses a header value (fields in any order, each once; all three
    /// required).
    pub fn parse(text: &str) -> Result<LinkEstimate, LinkHeaderError> {
        let (mut bw, mut rtt, mut secs) = (None, None, None);
        for part in text.split(';') {
            let (key, value) = part.split_once('=').ok_or(LinkHeaderError)?;
            let value: u64 = value.trim().parse().map_err(|_| LinkHeaderError)?;
            let slot = match key.trim() {
                "bw" => &mut bw,
                "rtt" => &mut rtt,
                "secs" => &mut secs,
                _ => return Err(LinkHeaderError),
            };
            if slot.replace(value).is_some() {
                return Err(LinkHeaderError);
            }
        }
        let (Some(bw), Some(rtt), Some(secs)) = (bw, rtt, secs) else {
            return Err(LinkHeaderError);
        };
        if bw < 100 || rtt > 3_600_000 || secs == 0 || secs > u64::from(MAX_BATCH_SECS) {
            return Err(LinkHeaderError);
        }
        Ok(LinkEstimate {
            bytes_per_sec: bw,
            rtt_ms: rtt,
            batch_secs: secs as u32,
        })
    }

    /// The zstd level that sends a batch soonest over this link: the one
    /// with the least compressing time plus link time per byte, never
    /// below [`DEFAULT_LEVEL`] (a LAN keeps it; a 256 kbit/s link gets
    /// about 12, a 64 kbit/s one 19).
    pub fn level(&self) -> i32 {
        let bw = self.bytes_per_sec.max(1) as f64;
        let mut best = (DEFAULT_LEVEL, f64::INFINITY);
        for (level, speed, size) in LEVELS {
            let cost = 1.0 / speed + size / bw;
            if cost < best.1 {
                best = (level, cost);
            }
        }
        best.0
    }

    /// The zstd level for a batch compressed while it is sent (central's
    /// replies on a slow link): compressing and the link overlap, so the
    /// level with the least of the two per byte (a 256 kbit/s link gets
    /// 19; a LAN [`DEFAULT_LEVEL`]).
    pub fn streamed_level(&self) -> i32 {
        let bw = self.bytes_per_sec.max(1) as f64;
        let mut best = (DEFAULT_LEVEL, f64::INFINITY);
        for (level, speed, size) in LEVELS {
            let cost = (1.0 / speed).max(size / bw);
            if cost < best.1 {
                best = (level, cost);
            }
        }
        best.0
    }

    /// The most bytes of packs (uncompressed) a batch should carry so that
    /// it takes about `batch_secs` on the link; at least
    /// [`MIN_BATCH_BYTES`], at most `cap`.
    pub fn batch_bytes(&self, cap: usize) -> usize {
        let wire = self.bytes_per_sec as f64 * f64::from(self.batch_secs);
        ((wire * RATIO) as usize).clamp(MIN_BATCH_BYTES, cap.max(MIN_BATCH_BYTES))
    }
}

/// The level for a link that may be unknown.
pub fn level_for(link: Option<&LinkEstimate>) -> i32 {
    link.map_or(DEFAULT_LEVEL, LinkEstimate::level)
}

/// The level of a streamed batch for a link that may be unknown.
pub fn streamed_level_for(link: Option<&LinkEstimate>) -> i32 {
    link.map_or(DEFAULT_LEVEL, LinkEstimate::streamed_level)
}

/// A byte budget for a link that may be unknown.
pub fn batch_bytes_for(link: Option<&LinkEstimate>, cap: usize) -> usize {
    link.map_or(cap, |l| l.batch_bytes(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(bw: u64) -> LinkEstimate {
        LinkEstimate {
            bytes_per_sec: bw,
            rtt_ms: 600,
            batch_secs: 30,
        }
    }

    #[test]
    fn header_round_trips_and_refuses_bad_values() {
        let l = link(32_000);
        assert_eq!(l.encode(), "bw=32000;rtt=600;secs=30");
        assert_eq!(LinkEstimate::parse(&l.encode()), Ok(l));
        assert_eq!(
            LinkEstimate::parse(" secs=30 ; rtt=600;bw=32000"),
            Ok(l),
            "any order, spaces"
        );
        for bad in [
            "",
            "bw=32000",
            "bw=32000;rtt=600",
            "bw=32000;rtt=600;secs=30;bw=1",
            "bw=x;rtt=600;secs=30",
            "bw=99;rtt=600;secs=30",
            "bw=32000;rtt=600;secs=0",
            "bw=32000;rtt=600;secs=601",
            "bw=32000;rtt=-1;secs=30",
            "bw=32000;rtt=600;secs=30;x=1",
            "bw=32000 rtt=600 secs=30",
        ] {
            assert_eq!(LinkEstimate::parse(bad), Err(LinkHeaderError), "{bad:?}");
        }
    }

    #[test]
    fn slower_links_get_harder_compression_and_smaller_batches() {
        let lan = link(100_000_000);
        let dsl = link(2_000_000 / 8);
        let kbit256 = link(32_000);
        let kbit64 = link(8_000);
        assert_eq!(lan.level(), DEFAULT_LEVEL);
        assert_eq!(level_for(None), DEFAULT_LEVEL);
        assert!(dsl.level() >= lan.level());
        assert!(kbit256.level() > lan.level());
        assert!(kbit64.level() >= kbit256.level());
        assert_eq!(kbit64.level(), 19);
        assert_eq!(lan.streamed_level(), DEFAULT_LEVEL);
        assert_eq!(streamed_level_for(None), DEFAULT_LEVEL);
        assert_eq!(kbit256.streamed_level(), 19);
        assert!(kbit256.streamed_level() >= kbit256.level());
        let cap = 16 << 20;
        assert_eq!(lan.batch_bytes(cap), cap);
        assert_eq!(batch_bytes_for(None, cap), cap);
        assert!(kbit256.batch_bytes(cap) < cap);
        assert!(kbit64.batch_bytes(cap) < kbit256.batch_bytes(cap));
        // 8 kB/s for 30 s, three message bytes per wire byte.
        assert_eq!(kbit64.batch_bytes(cap), 720_000);
        assert_eq!(link(100).batch_bytes(cap), MIN_BATCH_BYTES);
    }
}
