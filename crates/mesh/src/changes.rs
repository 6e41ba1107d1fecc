//! What changed in a cluster's list of nodes or Peers since the pass
//! before. The operator shares each list and each object between passes: an
//! unchanged list is the same list as before, an unchanged object the same
//! `Arc`, and the lists come in the same order pass after pass, so walking
//! the last list beside the new one finds the changes without looking at
//! any unchanged object.

use std::{cmp::Ordering, sync::Arc};

use crate::{
    observe::{NodeView, ObservedPeer, Shared},
    plan::address,
};

/// An object of a list, known by its name within its cluster.
pub(crate) trait Named {
    fn name(&self) -> &str;
}

impl Named for NodeView {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for ObservedPeer {
    fn name(&self) -> &str {
        &self.name
    }
}

/// A list as the last pass read it.
#[derive(Debug)]
pub(crate) struct Tracked<T> {
    last: Shared<T>,
}

impl<T> Default for Tracked<T> {
    fn default() -> Self {
        Self {
            last: Shared::default(),
        }
    }
}

/// The objects that left a list and those that came (a changed object is
/// both: its old `Arc` left, its new one came).
#[derive(Debug)]
pub(crate) struct Changes<T> {
    pub left: Vec<Arc<T>>,
    pub came: Vec<Arc<T>>,
}

impl<T: Named> Tracked<T> {
    /// What changed from the last list to `now`, which becomes the last.
    /// The same list as before costs nothing; lists in name order (as the
    /// operator's caches give them) cost one comparison of addresses per
    /// unchanged object; any other order is still told right, though an
    /// object out of place may be reported as having left and come back.
    pub fn update(&mut self, now: &Shared<T>) -> Changes<T> {
        let mut changes = Changes {
            left: Vec::new(),
            came: Vec::new(),
        };
        if self.last.same(now) {
            return changes;
        }
        let mut last = self.last.iter().peekable();
        let mut new = now.iter().peekable();
        loop {
            let order = match (last.peek(), new.peek()) {
                (None, None) => break,
                (Some(before), Some(after)) if address(before) == address(after) => None,
                (Some(before), Some(after)) => Some(before.name().cmp(after.name())),
                (Some(_), None) => Some(Ordering::Less),
                (None, Some(_)) => Some(Ordering::Greater),
            };
            match order {
                None => {
                    last.next();
                    new.next();
                }
                Some(Ordering::Less) => changes.left.extend(last.next().cloned()),
                Some(Ordering::Greater) => changes.came.extend(new.next().cloned()),
                Some(Ordering::Equal) => {
                    changes.left.extend(last.next().cloned());
                    changes.came.extend(new.next().cloned());
                }
            }
        }
        self.last = now.clone();
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Arc<NodeView> {
        Arc::new(NodeView {
            name: name.into(),
            ..NodeView::default()
        })
    }

    fn none<T>(changes: Changes<T>) -> bool {
        changes.left.is_empty() && changes.came.is_empty()
    }

    fn names(list: &[Arc<NodeView>]) -> Vec<&str> {
        list.iter().map(|n| n.name.as_str()).collect()
    }

    fn list(nodes: &[&Arc<NodeView>]) -> Shared<NodeView> {
        nodes.iter().map(|n| Arc::clone(n)).collect()
    }

    #[test]
    fn only_what_changed_is_reported() {
        let (a, b, c) = (node("a"), node("b"), node("c"));
        let mut tracked = Tracked::default();
        let first = tracked.update(&list(&[&a, &b, &c]));
        assert_eq!(names(&first.came), ["a", "b", "c"]);
        let same = list(&[&a, &b, &c]);
        assert!(
            none(tracked.update(&same)),
            "a new list of the same objects"
        );
        assert!(none(tracked.update(&same)), "the same list");
        let b2 = node("b");
        let d = node("d");
        let changes = tracked.update(&list(&[&a, &b2, &d]));
        assert_eq!(names(&changes.left), ["b", "c"]);
        assert_eq!(names(&changes.came), ["b", "d"]);
        assert!(Arc::ptr_eq(&changes.came[0], &b2));
        assert!(none(tracked.update(&list(&[&a, &b2, &d]))));
    }

    #[test]
    fn a_list_out_of_order_is_still_told_right() {
        let (a, b, c) = (node("a"), node("b"), node("c"));
        let mut tracked = Tracked::default();
        tracked.update(&list(&[&c, &a, &b]));
        let changes = tracked.update(&list(&[&b, &c]));
        // Whatever is reported, replaying it on the last list gives the new one.
        let mut names_now: Vec<&str> = vec!["c", "a", "b"];
        names_now.retain(|n| !changes.left.iter().any(|l| l.name == *n));
        names_now.extend(changes.came.iter().map(|n| n.name.as_str()));
        names_now.sort();
        assert_eq!(names_now, ["b", "c"]);
        assert!(none(tracked.update(&list(&[&b, &c]))));
    }
}
