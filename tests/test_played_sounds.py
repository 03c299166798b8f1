"""Which sounds a FastAGI command plays (``ivr call --asterisk`` narrates them; the waiting
tests find their prompts with it): the three ways the IVR plays sounds."""
from ivr.asterisk import sounds_played_by


def test_stream_file_get_data_and_read_name_their_sounds_in_order():
    assert sounds_played_by('STREAM FILE bpjs/greeting ""') == ["bpjs/greeting"]
    assert sounds_played_by("GET DATA bpjs/enter-id 6000 16") == ["bpjs/enter-id"]
    assert sounds_played_by('GET DATA "" 3000 12') == []            # listens only
    assert sounds_played_by('EXEC Read "IVR_KEY,bpjs/greeting&bpjs/main-menu,1,t(),1,5"') \
        == ["bpjs/greeting", "bpjs/main-menu"]


def test_other_commands_and_garbage_play_nothing():
    for command in ("WAIT FOR DIGIT 100", "SET VARIABLE X 1", 'STREAM FILE "unclosed',
                    "EXEC Read", "GET FULL VARIABLE ${READSTATUS}", ""):
        assert sounds_played_by(command) == []
