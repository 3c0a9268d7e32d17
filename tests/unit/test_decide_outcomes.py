"""Pure decisions behind issue 11: which items of a SUCCEEDED task arrived,
and how many new Globus tasks an identity may start."""
from pbs_globus_staging.decide import item_failure, slots_free, source_error_text


def test_file_item_fails_only_on_its_own_skipped_error():
    skipped = [("/~/in/b.dat", "/site/in/b.dat", "PERMISSION_DENIED")]
    assert item_failure(source_path="~/in/a.dat", destination_path="/site/in/a.dat",
                        recursive=False, skipped=skipped) is None
    why = item_failure(source_path="~/in/b.dat", destination_path="/site/in/b.dat",
                       recursive=False, skipped=skipped)
    assert why == source_error_text("PERMISSION_DENIED", "/~/in/b.dat")
    assert "PERMISSION_DENIED" in why and "/~/in/b.dat" in why


def test_recursive_item_fails_on_any_skipped_error_under_it():
    skipped = [("/~/in/sub/deep/x", "/site/in/sub/deep/x", "FILE_NOT_FOUND"),
               ("/~/in/sub/y", "/site/in/sub/y", "AMBIGUOUS_PATH"),
               ("/~/input2/z", "/site/input2/z", "FILE_NOT_FOUND")]
    why = item_failure(source_path="~/in/", destination_path="/site/in/", recursive=True,
                       skipped=skipped)
    assert why.startswith("FILE_NOT_FOUND: /~/in/sub/deep/x") and "1 more path" in why
    # a sibling whose name only starts the same is not under it
    assert item_failure(source_path="~/input/", destination_path="/site/input/",
                        recursive=True, skipped=skipped) is None


def test_nothing_skipped_means_arrived_even_when_nothing_moved():
    # an empty directory, or files a sync found up to date
    assert item_failure(source_path="~/empty/", destination_path="/site/empty/",
                        recursive=True, skipped=[]) is None


def test_slots_count_only_tasks_holding_one_and_stay_below_pending_limit():
    assert slots_free(holding=3, live=10, limit=3, pending_limit=100) == 0
    assert slots_free(holding=1, live=10, limit=3, pending_limit=100) == 2
    assert slots_free(holding=0, live=99, limit=3, pending_limit=100) == 1
    assert slots_free(holding=0, live=100, limit=3, pending_limit=100) == 0
    assert slots_free(holding=5, live=5, limit=0, pending_limit=100) == 95
