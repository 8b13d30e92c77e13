use super::*;

fn store() -> KeyedStore {
    KeyedStore::new(
        Box::new(HeapBackend::default()),
        Clock::starting_at(1_000_000),
    )
}

const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
const SEEN: ListStateDescriptor<String> = ListStateDescriptor::new("seen");
const TOTALS: MapStateDescriptor<String, f64> = MapStateDescriptor::new("totals");

#[test]
fn state_is_scoped_by_key_and_namespace() {
    let mut s = store();
    s.set_key(encode(&"alice").unwrap());
    s.value(&COUNT, b"w1").unwrap().update(&3).unwrap();
    s.value(&COUNT, b"w2").unwrap().update(&4).unwrap();
    s.set_key(encode(&"bob").unwrap());
    assert_eq!(s.value(&COUNT, b"w1").unwrap().get().unwrap(), None);
    s.value(&COUNT, b"w1").unwrap().update(&9).unwrap();
    s.set_key(encode(&"alice").unwrap());
    assert_eq!(s.value(&COUNT, b"w1").unwrap().get().unwrap(), Some(3));
    s.clear_namespace(b"w1").unwrap();
    assert_eq!(s.value(&COUNT, b"w1").unwrap().get().unwrap(), None);
    assert_eq!(s.value(&COUNT, b"w2").unwrap().get().unwrap(), Some(4));
}

#[test]
fn lists_maps_and_reducing_states() {
    let mut s = store();
    s.set_key(encode(&7u32).unwrap());
    let mut l = s.list(&SEEN, b"").unwrap();
    for v in ["a", "b", "c"] {
        l.add(&v.to_string()).unwrap();
    }
    assert_eq!(l.get().unwrap(), vec!["a", "b", "c"]);
    l.update(&["z".to_string()]).unwrap();
    assert_eq!(l.get().unwrap(), vec!["z"]);
    let mut m = s.map(&TOTALS, b"").unwrap();
    m.put(&"x".into(), &1.5).unwrap();
    m.put(&"y".into(), &2.0).unwrap();
    m.remove(&"x".into()).unwrap();
    assert_eq!(m.entries().unwrap(), vec![("y".to_string(), 2.0)]);
    let max = ReducingStateDescriptor::new("max", |a: i64, b: i64| a.max(b));
    let mut r = s.reducing(&max, b"").unwrap();
    for v in [3, 9, 4] {
        r.add(v).unwrap();
    }
    assert_eq!(r.get().unwrap(), Some(9));
    assert!(matches!(
        s.value(&ValueStateDescriptor::<u8>::new("seen"), b""),
        Err(StateError::KindMismatch { .. })
    ));
}

#[test]
fn snapshots_restore_everything() {
    let mut s = store();
    for k in 0..50u32 {
        s.set_key(encode(&k).unwrap());
        s.value(&COUNT, b"").unwrap().update(&u64::from(k)).unwrap();
        s.list(&SEEN, b"n").unwrap().add(&k.to_string()).unwrap();
    }
    let snap = s.snapshot().unwrap();
    let bytes = encode(&snap).unwrap();
    let mut t = store();
    t.restore(decode(&bytes).unwrap()).unwrap();
    assert_eq!(t.len(), s.len());
    t.set_key(encode(&42u32).unwrap());
    assert_eq!(t.value(&COUNT, b"").unwrap().get().unwrap(), Some(42));
    assert_eq!(
        t.list(&SEEN, b"n").unwrap().get().unwrap(),
        vec!["42".to_string()]
    );
}

#[tokio::test(start_paused = true)]
async fn ttl_expires_entries_and_reads_can_extend_them() {
    let mut s = store();
    s.set_key(encode(&1u8).unwrap());
    let written = ValueStateDescriptor::<u32>::new("w").with_ttl(StateTtlConfig::after_write(1000));
    let accessed =
        ValueStateDescriptor::<u32>::new("a").with_ttl(StateTtlConfig::after_access(1000));
    s.value(&written, b"").unwrap().update(&1).unwrap();
    s.value(&accessed, b"").unwrap().update(&2).unwrap();
    tokio::time::advance(std::time::Duration::from_millis(600)).await;
    assert_eq!(s.value(&written, b"").unwrap().get().unwrap(), Some(1));
    assert_eq!(s.value(&accessed, b"").unwrap().get().unwrap(), Some(2));
    tokio::time::advance(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        s.value(&written, b"").unwrap().get().unwrap(),
        None,
        "1200 ms after the write"
    );
    assert_eq!(
        s.value(&accessed, b"").unwrap().get().unwrap(),
        Some(2),
        "600 ms after the last read"
    );
    let list = ListStateDescriptor::<u32>::new("l").with_ttl(StateTtlConfig::after_write(100));
    s.list(&list, b"").unwrap().add(&5).unwrap();
    tokio::time::advance(std::time::Duration::from_millis(101)).await;
    assert!(s.list(&list, b"").unwrap().get().unwrap().is_empty());
    assert_eq!(s.len(), 1, "expired entries are removed when read");
}

#[test]
fn key_groups_map_to_contiguous_subtask_ranges() {
    for parallelism in [1, 2, 3, 7, 128] {
        let owners: Vec<u32> = (0..MAX_PARALLELISM)
            .map(|g| subtask_of_key_group(g, parallelism))
            .collect();
        assert!(
            owners.windows(2).all(|w| w[0] <= w[1]),
            "ranges are contiguous"
        );
        assert_eq!(owners[0], 0);
        assert_eq!(
            *owners.last().unwrap(),
            parallelism - 1,
            "every subtask owns some"
        );
    }
}
