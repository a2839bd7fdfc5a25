//! How the sync messages' git packs travel (`#[serde(with = ...)]` on their
//! `pack` fields). In memory a pack is git pack data; on the wire a pack of
//! whole objects and REF_DELTA entries (a thin pack, protocol 3) is sent as
//! its entries, `[kind, content]` each (kind 7: a delta, its content the
//! base's id then the delta), and rebuilt on arrival. That drops the pack's
//! framing (headers, Adler-32 and SHA-1 checksums: about 30 bytes per
//! record that zstd cannot compress) and loses no safety: the receiver
//! rebuilds and hashes every object to its id and checks every reference.
//! A pack that is anything else (OFS_DELTA entries, or broken) travels byte
//! for byte, so the receiver refuses exactly what was sent.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::{ByteBuf, Bytes};

use chartsync_git as git;

#[derive(Serialize)]
enum WireRef<'a> {
    Pack(&'a Bytes),
    Objects(Vec<(u8, &'a Bytes)>),
}

#[derive(Deserialize)]
enum Wire {
    Pack(ByteBuf),
    Objects(Vec<(u8, ByteBuf)>),
}

/// Serializes a pack.
pub fn serialize<S: Serializer>(pack: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    match git::split_pack_entries(pack) {
        Some(parts) => WireRef::Objects(
            parts
                .iter()
                .map(|(code, data)| (*code, Bytes::new(data)))
                .collect(),
        )
        .serialize(serializer),
        None => WireRef::Pack(Bytes::new(pack)).serialize(serializer),
    }
}

/// Deserializes a pack.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    match Wire::deserialize(deserializer)? {
        Wire::Pack(bytes) => Ok(bytes.into_vec()),
        Wire::Objects(parts) => {
            git::join_pack_entries(parts.iter().map(|(code, data)| (*code, data.as_slice())))
                .ok_or_else(|| {
                    serde::de::Error::custom(
                        "a pack entry of an unknown kind, or a delta without its base id",
                    )
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::envelope;
    use crate::sync::{PushRecord, PushRequest};
    use crate::{CommitId, PatientId};
    use chartsync_git::{Kind, Object, write_pack_only};

    fn request(pack: Vec<u8>) -> PushRequest {
        PushRequest {
            records: vec![PushRecord {
                id: PatientId::random(),
                expected: None,
                head: CommitId::from_slice(&[7; 20]).expect("20 bytes"),
                pack,
            }],
        }
    }

    fn round_trip(pack: Vec<u8>) -> (Vec<u8>, usize) {
        let bytes = envelope::encode(&request(pack)).expect("encode");
        let back: PushRequest = envelope::decode(&bytes, 1 << 20).expect("decode");
        (back.records[0].pack.clone(), bytes.len())
    }

    #[test]
    fn packs_arrive_as_sent_and_smaller() {
        let objects = vec![
            Object::new(Kind::Blob, b"name: A\ncatchment: north\n".to_vec()),
            Object::new(Kind::Blob, b"visits: []\n".to_vec()),
        ];
        let pack = write_pack_only(&objects, 0);
        let (back, split_len) = round_trip(pack.clone());
        assert_eq!(back, pack);
        // The same pack sent byte for byte is larger.
        let raw = rmp_serde::to_vec_named(
            &serde_json::json!({"records": [{"pack": serde_bytes::Bytes::new(&pack)}]}),
        )
        .expect("encode");
        assert!(split_len < raw.len(), "{split_len} >= {}", raw.len());

        // A broken pack travels unchanged.
        let mut broken = pack.clone();
        let middle = broken.len() / 2;
        broken[middle] ^= 1;
        assert_eq!(round_trip(broken.clone()).0, broken);
        assert_eq!(round_trip(b"not a pack".to_vec()).0, b"not a pack".to_vec());
    }

    #[test]
    fn an_unknown_object_kind_is_refused() {
        #[derive(serde::Serialize)]
        struct Hostile {
            records: Vec<HostileRecord>,
        }
        #[derive(serde::Serialize)]
        struct HostileRecord {
            id: PatientId,
            expected: Option<CommitId>,
            head: CommitId,
            pack: HostilePack,
        }
        #[derive(serde::Serialize)]
        enum HostilePack {
            Objects(Vec<(u8, serde_bytes::ByteBuf)>),
        }
        let message = Hostile {
            records: vec![HostileRecord {
                id: PatientId::random(),
                expected: None,
                head: CommitId::from_slice(&[7; 20]).expect("20 bytes"),
                pack: HostilePack::Objects(vec![(6, serde_bytes::ByteBuf::from(vec![1, 2]))]),
            }],
        };
        let bytes = envelope::encode(&message).expect("encode");
        assert!(envelope::decode::<PushRequest>(&bytes, 1 << 20).is_err());
    }
}
