"""multiprocessing.Pool code, unchanged but for the import, on processes and on threads.

Run: python examples/pool_drop_in.py
"""

from __future__ import annotations

from just_distribute import Pool


def square(x: int) -> int:
    return x * x


def main() -> None:
    with Pool(2) as pool:
        assert pool.map(square, range(100)) == [x * x for x in range(100)]
        assert pool.starmap(pow, [(2, 10), (3, 3)]) == [1024, 27]
        assert sorted(pool.imap_unordered(square, range(10))) == [x * x for x in range(10)]
        got: list[list[int]] = []
        pool.map_async(square, range(5), callback=got.append).wait(30)
        assert got == [[0, 1, 4, 9, 16]]
        # A lambda: multiprocessing.Pool cannot send one, this Pool can.
        assert pool.map(lambda s: s[::-1], ["abc", "de"]) == ["cba", "ed"]
    print("compute: map, starmap, imap_unordered, map_async and a lambda")

    with Pool(8, job="io") as pool:
        assert pool.apply(square, (12,)) == 144
    print("io: the same API on threads")
    print("pool_drop_in ok")


if __name__ == "__main__":
    main()
