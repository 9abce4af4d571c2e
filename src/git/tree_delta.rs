//! The `.toml` files that differ between two versions of one directory tree.
//!
//! A registry of ten thousand personas has a ten-thousand-entry personas
//! tree, rewritten by every commit that touches one file. Decoding both
//! versions in full for every commit would dominate the history walk, so the
//! raw trees are compared as bytes first: the common prefix and the common
//! suffix hold identical entries (entry boundaries are remembered from the
//! previous commit), and only the entries in between are parsed and compared.

use gix::ObjectId;

/// One version of a tree: its raw bytes and where each entry starts.
#[derive(Debug, Clone)]
pub struct IndexedTree {
    pub id: Option<ObjectId>,
    data: Vec<u8>,
    /// Start offset of every entry, then the length of `data`.
    boundaries: Vec<usize>,
}

impl Default for IndexedTree {
    /// No directory at all: no entries.
    fn default() -> Self {
        IndexedTree {
            id: None,
            data: Vec::new(),
            boundaries: vec![0],
        }
    }
}

/// Files added or changed, and files removed, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub changed: Vec<(Vec<u8>, ObjectId)>,
    pub removed: Vec<Vec<u8>>,
    /// Those of `changed` that are not regular files (a symbolic link, a
    /// submodule), by name: their object is not the file's text.
    pub not_regular: Vec<(Vec<u8>, NotRegular)>,
}

/// A tree entry named like a persona file that is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRegular {
    SymbolicLink,
    Submodule,
}

impl NotRegular {
    fn of(mode: &[u8]) -> Option<NotRegular> {
        match mode {
            b"120000" => Some(NotRegular::SymbolicLink),
            b"160000" => Some(NotRegular::Submodule),
            _ => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            NotRegular::SymbolicLink => "a symbolic link",
            NotRegular::Submodule => "a submodule",
        }
    }
}

/// One raw entry: `<mode> SP <name> NUL <hash>`.
struct Entry<'a> {
    mode: &'a [u8],
    name: &'a [u8],
    id: &'a [u8],
    is_tree: bool,
    end: usize,
}

fn entry_at(data: &[u8], start: usize, hash_len: usize) -> Result<Entry<'_>, String> {
    let corrupt = || format!("malformed tree entry at byte {start}");
    let rest = &data[start..];
    let space = rest.iter().position(|byte| *byte == b' ').ok_or_else(corrupt)?;
    let nul = space
        + 1
        + rest[space + 1..]
            .iter()
            .position(|byte| *byte == 0)
            .ok_or_else(corrupt)?;
    let end = nul + 1 + hash_len;
    if end > rest.len() {
        return Err(corrupt());
    }
    Ok(Entry {
        mode: &rest[..space],
        name: &rest[space + 1..nul],
        id: &rest[nul + 1..end],
        is_tree: &rest[..space] == b"40000",
        end: start + end,
    })
}

fn is_toml_file(entry: &Entry<'_>) -> bool {
    !entry.is_tree && entry.name.ends_with(b".toml")
}

impl Delta {
    fn record_changed(&mut self, entry: &Entry<'_>) {
        self.changed
            .push((entry.name.to_vec(), ObjectId::from_bytes_or_panic(entry.id)));
        if let Some(kind) = NotRegular::of(entry.mode) {
            self.not_regular.push((entry.name.to_vec(), kind));
        }
    }
}

impl IndexedTree {
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Indexes a raw tree object. `id` is `None` for "no such directory".
    pub fn new(id: Option<ObjectId>, data: Vec<u8>, hash_len: usize) -> Result<IndexedTree, String> {
        let mut boundaries = Vec::new();
        let mut offset = 0;
        while offset < data.len() {
            boundaries.push(offset);
            offset = entry_at(&data, offset, hash_len)?.end;
        }
        boundaries.push(data.len());
        Ok(IndexedTree { id, data, boundaries })
    }

    /// The next version of this tree, `data` with id `id`, and the `.toml`
    /// files that differ from this one to it. With `everything`, every file
    /// of the new tree counts as changed.
    pub fn successor(
        &self,
        id: Option<ObjectId>,
        data: Vec<u8>,
        everything: bool,
        hash_len: usize,
    ) -> Result<(IndexedTree, Delta), String> {
        let mut delta = Delta::default();
        if everything {
            let new = IndexedTree::new(id, data, hash_len)?;
            let whole = Span {
                old_from: 0,
                old_to: self.data.len(),
                new_from: 0,
                new_to: new.data.len(),
            };
            merge(self, &new, whole, true, hash_len, &mut delta)?;
            return Ok((new, delta));
        }
        let old = self;
        let shortest = data.len().min(old.data.len());
        // Identical leading bytes are identical entries: start at the last
        // entry boundary inside the common prefix (a boundary of both trees).
        let common_prefix = common_prefix(&data, &old.data);
        let start_index = match old.boundaries.binary_search(&common_prefix) {
            Ok(index) => index,
            Err(index) => index - 1,
        };
        let start = old.boundaries[start_index];
        // Identical trailing bytes, not reaching back before `start`.
        let common_suffix = common_suffix(&data[start..], &old.data[start..]).min(shortest - start);
        // The differing middle of the new tree ends at its first entry
        // boundary, inside the common suffix, that is also an entry boundary
        // of the old tree: from there on both parse identically. The end of
        // both trees always qualifies, so the walk stops.
        let shift = data.len() as isize - old.data.len() as isize;
        let suffix_start = data.len() - common_suffix;
        let mut boundaries = old.boundaries[..start_index].to_vec();
        let mut new_end = start;
        let old_end_index = loop {
            let old_end = new_end as isize - shift;
            if new_end >= suffix_start
                && old_end >= start as isize
                && let Ok(index) = old.boundaries.binary_search(&(old_end as usize))
            {
                break index;
            }
            boundaries.push(new_end);
            new_end = entry_at(&data, new_end, hash_len)?.end;
        };
        boundaries.extend(
            old.boundaries[old_end_index..]
                .iter()
                .map(|boundary| (*boundary as isize + shift) as usize),
        );
        let new = IndexedTree { id, data, boundaries };
        let middle = Span {
            old_from: start,
            old_to: old.boundaries[old_end_index],
            new_from: start,
            new_to: new_end,
        };
        merge(old, &new, middle, false, hash_len, &mut delta)?;
        Ok((new, delta))
    }
}

/// Length of the common prefix, compared a block at a time (vectorized).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 128;
    let mut offset = 0;
    for (left, right) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        if left == right {
            offset += left.len().min(right.len());
            if left.len() != right.len() {
                return offset;
            }
        } else {
            return offset + left.iter().zip(right).take_while(|(x, y)| x == y).count();
        }
    }
    offset
}

/// Length of the common suffix, compared a block at a time.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 128;
    let mut length = 0;
    for (left, right) in a.rchunks(BLOCK).zip(b.rchunks(BLOCK)) {
        if left == right {
            length += left.len();
        } else {
            let same = left
                .iter()
                .rev()
                .zip(right.iter().rev())
                .take_while(|(x, y)| x == y)
                .count();
            return length + same;
        }
    }
    length
}

/// Byte ranges of the old and the new tree to compare.
#[derive(Clone, Copy)]
struct Span {
    old_from: usize,
    old_to: usize,
    new_from: usize,
    new_to: usize,
}

/// Merge-joins the `.toml` files of `old[old_from..old_to]` and
/// `new[new_from..new_to]`, both in tree order (byte order, as only blobs are
/// compared). With `everything`, unchanged files are reported as changed too.
fn merge(
    old: &IndexedTree,
    new: &IndexedTree,
    span: Span,
    everything: bool,
    hash_len: usize,
    delta: &mut Delta,
) -> Result<(), String> {
    let Span {
        old_from,
        old_to,
        new_from,
        new_to,
    } = span;
    fn next<'t>(
        tree: &'t IndexedTree,
        offset: &mut usize,
        to: usize,
        hash_len: usize,
    ) -> Result<Option<Entry<'t>>, String> {
        while *offset < to {
            let entry = entry_at(&tree.data, *offset, hash_len)?;
            *offset = entry.end;
            if is_toml_file(&entry) {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }
    let (mut old_offset, mut new_offset) = (old_from, new_from);
    let mut old_entry = next(old, &mut old_offset, old_to, hash_len)?;
    let mut new_entry = next(new, &mut new_offset, new_to, hash_len)?;
    loop {
        match (&old_entry, &new_entry) {
            (None, None) => return Ok(()),
            (Some(gone), None) => {
                delta.removed.push(gone.name.to_vec());
                old_entry = next(old, &mut old_offset, old_to, hash_len)?;
            }
            (None, Some(added)) => {
                delta.record_changed(added);
                new_entry = next(new, &mut new_offset, new_to, hash_len)?;
            }
            (Some(before), Some(after)) => match before.name.cmp(after.name) {
                std::cmp::Ordering::Less => {
                    delta.removed.push(before.name.to_vec());
                    old_entry = next(old, &mut old_offset, old_to, hash_len)?;
                }
                std::cmp::Ordering::Greater => {
                    delta.record_changed(after);
                    new_entry = next(new, &mut new_offset, new_to, hash_len)?;
                }
                std::cmp::Ordering::Equal => {
                    if everything || before.id != after.id || before.mode != after.mode {
                        delta.record_changed(after);
                    }
                    old_entry = next(old, &mut old_offset, old_to, hash_len)?;
                    new_entry = next(new, &mut new_offset, new_to, hash_len)?;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_LEN: usize = 20;

    /// A raw tree of `(name, blob byte)` entries, sorted as git sorts them.
    fn tree(files: &[(String, u8)]) -> IndexedTree {
        let mut sorted = files.to_vec();
        sorted.sort();
        let mut data = Vec::new();
        for (name, blob) in &sorted {
            let mode: &[u8] = if name.ends_with("dir") { b"40000" } else { b"100644" };
            data.extend_from_slice(mode);
            data.push(b' ');
            data.extend_from_slice(name.as_bytes());
            data.push(0);
            data.extend_from_slice(&[*blob; HASH_LEN]);
        }
        let id = ObjectId::from_bytes_or_panic(&sha2_like(&data));
        IndexedTree::new(Some(id), data, HASH_LEN).unwrap()
    }

    /// A stand-in tree id that differs whenever the content does.
    fn sha2_like(data: &[u8]) -> [u8; HASH_LEN] {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(data);
        digest[..HASH_LEN].try_into().unwrap()
    }

    /// The answer by brute force: compare the two file maps.
    fn expected(old: &[(String, u8)], new: &[(String, u8)]) -> (Vec<String>, Vec<String>) {
        let toml = |files: &[(String, u8)]| -> std::collections::BTreeMap<String, u8> {
            files
                .iter()
                .filter(|(name, _)| name.ends_with(".toml"))
                .cloned()
                .collect()
        };
        let (old, new) = (toml(old), toml(new));
        let changed = new
            .iter()
            .filter(|(name, blob)| old.get(*name) != Some(blob))
            .map(|(name, _)| name.clone())
            .collect();
        let removed = old.keys().filter(|name| !new.contains_key(*name)).cloned().collect();
        (changed, removed)
    }

    fn actual(old: &IndexedTree, new: &IndexedTree) -> (Vec<String>, Vec<String>) {
        let (next, delta) = old.successor(new.id, new.data.clone(), false, HASH_LEN).unwrap();
        // The boundaries carried over must be those a full parse finds.
        assert_eq!(next.boundaries, new.boundaries);
        let text = |name: &[u8]| String::from_utf8(name.to_vec()).unwrap();
        (
            delta.changed.iter().map(|(name, _)| text(name)).collect(),
            delta.removed.iter().map(|name| text(name)).collect(),
        )
    }

    #[test]
    fn agrees_with_brute_force_on_random_edits() {
        // A small deterministic generator: edits near the start, the end, the
        // middle, of names that share prefixes and of equal-length names.
        let mut state: u64 = 0x9e3779b97f4a7c15;
        let mut random = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        for round in 0..2_000 {
            let size = random(60);
            let mut old: Vec<(String, u8)> = (0..size)
                .map(|n| (format!("p{}.toml", n * 3), random(3) as u8))
                .collect();
            if round % 5 == 0 {
                old.push(("sub-dir".to_string(), 1));
                old.push(("notes.md".to_string(), 1));
            }
            let mut new = old.clone();
            for _ in 0..random(4) {
                match random(4) {
                    0 if !new.is_empty() => {
                        let index = random(new.len());
                        new.remove(index);
                    }
                    1 if !new.is_empty() => {
                        let index = random(new.len());
                        new[index].1 = new[index].1.wrapping_add(1);
                    }
                    _ => {
                        let name = format!("p{}.toml", random(200));
                        if !new.iter().any(|(existing, _)| *existing == name) {
                            new.push((name, random(3) as u8));
                        }
                    }
                }
            }
            let (old_tree, new_tree) = (tree(&old), tree(&new));
            assert_eq!(
                actual(&old_tree, &new_tree),
                expected(&old, &new),
                "round {round}: {old:?} → {new:?}"
            );
        }
    }

    #[test]
    fn everything_lists_every_file_and_still_finds_removals() {
        let old = tree(&[("a.toml".into(), 1), ("b.toml".into(), 1)]);
        let new = tree(&[("b.toml".into(), 1), ("c.toml".into(), 2), ("x-dir".into(), 1)]);
        let (_, delta) = old.successor(new.id, new.data.clone(), true, HASH_LEN).unwrap();
        let names: Vec<&[u8]> = delta.changed.iter().map(|(name, _)| name.as_slice()).collect();
        assert_eq!(names, [b"b.toml".as_slice(), b"c.toml"]);
        assert_eq!(delta.removed, [b"a.toml".to_vec()]);
    }

    #[test]
    fn a_directory_appearing_or_vanishing_adds_or_removes_all_its_files() {
        let some = tree(&[("a.toml".into(), 1), ("b.toml".into(), 2)]);
        let none = IndexedTree::default();
        assert_eq!(actual(&none, &some), (vec!["a.toml".into(), "b.toml".into()], vec![]));
        assert_eq!(actual(&some, &none), (vec![], vec!["a.toml".into(), "b.toml".into()]));
    }

    #[test]
    fn a_truncated_tree_is_an_error_not_a_panic() {
        let whole = tree(&[("a.toml".into(), 1)]);
        let cut = whole.data[..whole.data.len() - 3].to_vec();
        assert!(IndexedTree::new(None, cut, HASH_LEN).is_err());
    }
}
