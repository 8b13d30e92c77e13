//! The simulated disk across a crash: a directory removed and created again under the same name
//! keeps the files written into it afterwards.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use weir_seams::disk::{Disk, DiskFaults};

const HOST: &str = "host";

/// First boot: a write that failed half way leaves `p/id.tmp` behind; the directory is then
/// removed and made again, and `p/id` written durably. Second boot: reads `p/id`.
async fn boot(boots: Rc<Cell<u32>>, read: Rc<RefCell<Option<Vec<u8>>>>) -> turmoil::Result {
    let disk = Disk::sim("/data", DiskFaults::seeded(1));
    disk.create_root().await?;
    boots.set(boots.get() + 1);
    if boots.get() == 1 {
        disk.create_dir_all("p")?;
        disk.sync_dir(".").await?;
        let half = disk.open("p/id.tmp", true)?;
        half.write_all_at(b"x", 0)?;
        drop(half);
        disk.remove_dir_all("p").await?;
        disk.create_dir_all("p")?;
        disk.sync_dir(".").await?;
        disk.write_atomic("p/id", b"two").await?;
    } else {
        *read.borrow_mut() = disk.read_small("p/id")?;
    }
    std::future::pending::<()>().await;
    Ok(())
}

#[test]
fn a_directory_made_again_keeps_what_was_synced_into_it_across_a_crash() {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(10))
        .build();
    let boots = Rc::new(Cell::new(0));
    let read = Rc::new(RefCell::new(None));
    {
        let (boots, read) = (Rc::clone(&boots), Rc::clone(&read));
        sim.host(HOST, move || boot(Rc::clone(&boots), Rc::clone(&read)));
    }
    while boots.get() < 1 {
        sim.step().unwrap();
    }
    for _ in 0..100 {
        sim.step().unwrap();
    }
    sim.crash(HOST);
    sim.bounce(HOST);
    while read.borrow().is_none() {
        sim.step().unwrap();
    }
    assert_eq!(read.borrow().as_deref(), Some(&b"two"[..]));
}
