//! The client header names a route has dropped for being on no list, remembered for the
//! life of one snapshot so that each is reported once (the request path logs it), and
//! at most [`REMEMBERED`] of them: a client making up names cannot flood the log.
//!
//! A request that drops nothing never comes here. One that does reads a few slots
//! without a lock: the names fill the slots in order and are never removed, so a reader
//! meets the known names first, then either its own or an empty slot to claim.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderName;

/// The most names remembered (and so reported) per route and snapshot.
pub const REMEMBERED: usize = 16;

/// What [`UnlistedNames::note`] makes of a dropped name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// Dropped on this route for the first time in this snapshot: worth a log line.
    First,
    /// Seen before, or not remembered (the slots were full and that was reported).
    Again,
    /// A new name, and the first one that found every slot taken: worth one line saying
    /// that further names go unreported until the next reload.
    Full,
}

/// The names, with room for [`REMEMBERED`]; nothing is allocated before the first one.
#[derive(Debug, Default)]
pub struct UnlistedNames {
    slots: OnceLock<Box<[OnceLock<HeaderName>; REMEMBERED]>>,
    full_reported: AtomicBool,
}

impl UnlistedNames {
    /// Remembers `name`, and says whether it is new.
    pub fn note(&self, name: &HeaderName) -> Noted {
        let slots = self.slots.get_or_init(Box::default);
        for slot in slots.iter() {
            // A slot is claimed once; whoever loses the race reads the winner's name.
            let known = match slot.get() {
                Some(known) => known,
                None => match slot.set(name.clone()) {
                    Ok(()) => return Noted::First,
                    Err(_) => match slot.get() {
                        Some(known) => known,
                        None => continue,
                    },
                },
            };
            if known == name {
                return Noted::Again;
            }
        }
        if self.full_reported.swap(true, Ordering::Relaxed) {
            Noted::Again
        } else {
            Noted::Full
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> HeaderName {
        HeaderName::from_bytes(text.as_bytes()).unwrap()
    }

    #[test]
    fn each_name_is_first_once_until_the_slots_are_full_which_is_said_once() {
        let names = UnlistedNames::default();
        assert_eq!(names.note(&name("x-api-key")), Noted::First);
        assert_eq!(names.note(&name("X-Api-Key")), Noted::Again);
        assert_eq!(names.note(&name("x-tenant")), Noted::First);
        assert_eq!(names.note(&name("x-api-key")), Noted::Again);
        for i in 2..REMEMBERED {
            assert_eq!(names.note(&name(&format!("x-made-up-{i}"))), Noted::First);
        }
        assert_eq!(names.note(&name("x-one-too-many")), Noted::Full);
        assert_eq!(names.note(&name("x-two-too-many")), Noted::Again);
        assert_eq!(names.note(&name("x-one-too-many")), Noted::Again);
        assert_eq!(names.note(&name("x-tenant")), Noted::Again);
    }

    #[test]
    fn threads_racing_on_the_same_names_report_each_once() {
        let names = UnlistedNames::default();
        let firsts: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..REMEMBERED + 4)
                            .filter(|i| {
                                let noted = names.note(&name(&format!("x-name-{i}")));
                                noted == Noted::First
                            })
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(firsts, REMEMBERED);
    }
}
