"""The block-count predictions the tensor-parallel test and benchmark check
runs against: numroc_'s extents deal every index exactly once, and grid
position (0, 0)'s share of a model follows the blocked/whole rule."""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thinkscale_analysis.tensor_blocks import extent, held_elements, is_blocked  # noqa: E402


class Extent(unittest.TestCase):
    def test_known_values(self):
        # 100 = blocks 32, 32, 32, 4 dealt to 2 processes: 0 gets 32+32, 1 gets 32+4.
        self.assertEqual(extent(100, 0, 2), 64)
        self.assertEqual(extent(100, 1, 2), 36)
        self.assertEqual(extent(64, 1, 2), 32)
        self.assertEqual(extent(10, 1, 2), 0)  # one partial block: all on process 0
        self.assertEqual(extent(10, 0, 1, nb=4), 10)

    def test_every_index_dealt_once(self):
        for n in range(1, 300, 7):
            for procs in (1, 2, 3, 4):
                for nb in (4, 32):
                    self.assertEqual(sum(extent(n, me, procs, nb) for me in range(procs)), n,
                                     (n, procs, nb))


class Held(unittest.TestCase):
    def test_blocked_rule(self):
        self.assertTrue(is_blocked("blocks.0.wq", (64, 64), 1, 2))
        self.assertFalse(is_blocked("embed", (256, 64), 1, 2))  # a table, read directly
        self.assertFalse(is_blocked("blocks.0.norm", (64,), 2, 2))  # not a matrix
        self.assertFalse(is_blocked("energy_head", (1, 64), 1, 2))  # too small for 2 columns

    def test_share_of_a_model(self):
        shapes = {"embed": (256, 64), "w": (96, 64), "norm": (64,)}
        local, blocked = held_elements(shapes, 1, 2)
        # w [96, 64]: out 96 over 2 columns -> 64 at column 0; in 64 whole on one row.
        self.assertEqual((local, blocked), (256 * 64 + 64 * 64 + 64, 1))
        self.assertEqual(held_elements(shapes, 1, 1), (256 * 64 + 96 * 64 + 64, 1))


if __name__ == "__main__":
    unittest.main()
