//! Errno numbers and their symbolic names: the one table both sides use.
//!
//! Only numbers cross the wire. A name shown anywhere (evidence, reports, known answers in
//! `matrix.toml`) is looked up here from the number, so a guest cannot label errno 5 "EINVAL".
//! The numbers are Linux's generic (x86, arm64, riscv) values from `asm-generic/errno-base.h`
//! and `asm-generic/errno.h`.

/// (number, name) for every errno Linux defines on the architectures mmx boots.
const TABLE: &[(i32, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (3, "ESRCH"),
    (4, "EINTR"),
    (5, "EIO"),
    (6, "ENXIO"),
    (7, "E2BIG"),
    (8, "ENOEXEC"),
    (9, "EBADF"),
    (10, "ECHILD"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (14, "EFAULT"),
    (15, "ENOTBLK"),
    (16, "EBUSY"),
    (17, "EEXIST"),
    (18, "EXDEV"),
    (19, "ENODEV"),
    (20, "ENOTDIR"),
    (21, "EISDIR"),
    (22, "EINVAL"),
    (23, "ENFILE"),
    (24, "EMFILE"),
    (25, "ENOTTY"),
    (26, "ETXTBSY"),
    (27, "EFBIG"),
    (28, "ENOSPC"),
    (29, "ESPIPE"),
    (30, "EROFS"),
    (31, "EMLINK"),
    (32, "EPIPE"),
    (33, "EDOM"),
    (34, "ERANGE"),
    (35, "EDEADLK"),
    (36, "ENAMETOOLONG"),
    (37, "ENOLCK"),
    (38, "ENOSYS"),
    (39, "ENOTEMPTY"),
    (40, "ELOOP"),
    (42, "ENOMSG"),
    (43, "EIDRM"),
    (61, "ENODATA"),
    (62, "ETIME"),
    (71, "EPROTO"),
    (74, "EBADMSG"),
    (75, "EOVERFLOW"),
    (84, "EILSEQ"),
    (87, "EUSERS"),
    (88, "ENOTSOCK"),
    (95, "EOPNOTSUPP"),
    (98, "EADDRINUSE"),
    (103, "ECONNABORTED"),
    (104, "ECONNRESET"),
    (105, "ENOBUFS"),
    (110, "ETIMEDOUT"),
    (111, "ECONNREFUSED"),
    (116, "ESTALE"),
    (117, "EUCLEAN"),
    (121, "EREMOTEIO"),
    (122, "EDQUOT"),
    (125, "ECANCELED"),
    (130, "EOWNERDEAD"),
    (133, "EHWPOISON"),
];

/// The symbolic name of an errno (`22` → `EINVAL`), where Linux defines one.
pub fn name(errno: i32) -> Option<&'static str> {
    TABLE.iter().find(|(n, _)| *n == errno).map(|(_, s)| *s)
}

/// The number of a symbolic errno name (`EINVAL` → `22`). `ENOTSUP` is Linux's alias of
/// `EOPNOTSUPP` and `EWOULDBLOCK` of `EAGAIN`.
pub fn number(name: &str) -> Option<i32> {
    let name = match name {
        "ENOTSUP" => "EOPNOTSUPP",
        "EWOULDBLOCK" => "EAGAIN",
        other => other,
    };
    TABLE.iter().find(|(_, s)| *s == name).map(|(n, _)| *n)
}

/// `EINVAL`, or `errno 4242` for a number Linux does not define (a hostile or broken agent).
pub fn describe(errno: i32) -> String {
    name(errno).map_or_else(|| format!("errno {errno}"), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for (n, s) in TABLE {
            assert_eq!(name(*n), Some(*s));
            assert_eq!(number(s), Some(*n));
        }
        assert_eq!(number("ENOTSUP"), Some(95));
        assert_eq!(name(4242), None);
        assert_eq!(describe(4242), "errno 4242");
        assert_eq!(describe(5), "EIO");
    }

    #[test]
    fn the_table_has_no_duplicates() {
        let mut nums: Vec<i32> = TABLE.iter().map(|(n, _)| *n).collect();
        nums.sort_unstable();
        nums.dedup();
        assert_eq!(nums.len(), TABLE.len());
    }
}
