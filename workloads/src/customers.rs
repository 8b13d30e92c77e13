//! The customer table that order jobs enrich orders from: [`CUSTOMERS`] customers,
//! `customer-0` to `customer-9999`, each with a name, a tier and a region. It is reference
//! data, the same in every run (made from a fixed seed), which every task manager holds in
//! memory as a broadcast lookup table; an order whose customer is not in it cannot be
//! enriched.

use crate::generator::letters;
use rand::Rng;
use serde::Serialize;
use std::sync::OnceLock;
use weir_seams::rng;

/// Customers in the table.
pub const CUSTOMERS: u64 = 10_000;
/// Tiers, from the most common to the rarest.
pub const TIERS: [&str; 4] = ["bronze", "silver", "gold", "platinum"];
/// Regions.
pub const REGIONS: [&str; 4] = ["eu-west", "eu-north", "us-east", "ap-south"];
/// The fixed seed the table is made from.
const TABLE_SEED: u64 = 0x0c05_7000;

/// One customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Customer {
    /// Display name.
    pub name: String,
    /// Loyalty tier, one of [`TIERS`].
    pub tier: &'static str,
    /// Home region, one of [`REGIONS`].
    pub region: &'static str,
}

/// The customer with id `customer_id` (`customer-<n>`), if the table holds one.
pub fn lookup(customer_id: &str) -> Option<&'static Customer> {
    let n: usize = customer_id.strip_prefix("customer-")?.parse().ok()?;
    table().get(n)
}

fn table() -> &'static [Customer] {
    static TABLE: OnceLock<Vec<Customer>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut r = rng::derive(TABLE_SEED, "workloads/customers");
        (0..CUSTOMERS)
            .map(|_| {
                // Half bronze, 30% silver, 15% gold, 5% platinum.
                let tier = match r.random_range(0..100) {
                    0..50 => TIERS[0],
                    50..80 => TIERS[1],
                    80..95 => TIERS[2],
                    _ => TIERS[3],
                };
                let name = letters(&mut r, 8);
                Customer {
                    name,
                    tier,
                    region: REGIONS[r.random_range(0..REGIONS.len())],
                }
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_customer_is_found_and_no_other() {
        assert!(lookup("customer-0").is_some());
        assert!(lookup("customer-9999").is_some());
        assert_eq!(lookup("customer-10000"), None);
        assert_eq!(lookup("customer-x"), None);
        assert_eq!(lookup("client-1"), None);
        let tiers = (0..CUSTOMERS)
            .filter(|n| lookup(&format!("customer-{n}")).unwrap().tier == "platinum")
            .count();
        assert!((300..700).contains(&tiers), "{tiers} platinum customers");
    }
}
