"""Job comments the agent writes must get through ``qalter -W comment=``."""
from pbs_globus_staging.pbsctl import safe_comment
from pbs_globus_staging_sim.pbsdouble.cmd import split_pbs_list


def test_a_comment_cut_through_a_quoted_path_is_still_one_valid_value():
    # PBS's -W parser (pbs_quote_parse, as the double models it) refuses an
    # unbalanced quote, so a long quoted path cut at 200 characters used to
    # make the qalter fail and the job's comment never said why it was held.
    text = ("staging: stage-in FAILED: stagein_globus: item 1: local path '"
            + "/lus/bob" * 40 + "' leads through a symbolic link to '/lus/alice'")
    comment = safe_comment(text)
    assert len(comment) <= 200 and comment.startswith("staging: stage-in FAILED")
    assert len(split_pbs_list(f"comment={comment}", allow_space=True)) == 1
    for odd in ("the victim's file", "it's 'quoted' and odd", 'a "b'):
        assert len(split_pbs_list(f"comment={safe_comment(odd)}", allow_space=True)) == 1
