//! The location of an IP from a MaxMind-format database (GeoIP2 / GeoLite2 City, or any
//! database with the same `city` and `country` records), read once at start.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use maxminddb::{Reader, geoip2};

pub struct GeoIp {
    reader: Reader<Vec<u8>>,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("GeoIp")
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl GeoIp {
    /// Reads the whole database into memory; fails when the file is not a MaxMind DB.
    pub fn open(path: &Path) -> Result<Self, maxminddb::MaxMindDbError> {
        Ok(Self {
            reader: Reader::open_readfile(path)?,
        })
    }

    /// `City, Country` (English names), or just the country; None when the database has no
    /// record for the address.
    pub fn locate(&self, ip: IpAddr) -> Option<String> {
        let found = match self.reader.lookup(ip) {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(%error, "geoip lookup failed");
                return None;
            }
        };
        let city = match found.decode::<geoip2::City<'_>>() {
            Ok(city) => city?,
            Err(error) => {
                tracing::warn!(%error, "geoip record unreadable");
                return None;
            }
        };
        let parts: Vec<&str> = [city.city.names.english, city.country.names.english]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}
