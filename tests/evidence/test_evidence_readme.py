"""README facts: the five parts, line numbers, images, where the README is found."""

from __future__ import annotations

import shutil
from pathlib import Path

from grader.evidence.readme import PART_NAMES, analyze_readme

FIXTURES = Path(__file__).parent / "fixtures"


def test_good_readme_shows_every_part_with_lines() -> None:
    facts = analyze_readme(FIXTURES / "readme_good")
    assert facts.path == "README.md"
    assert all(facts.parts[name].found for name in PART_NAMES)
    assert facts.parts["summary"].lines == [22, 27, 28, 29]  # "Param #", Total, Trainable, Non-trainable params
    assert facts.parts["model_code"].evidence == "model code in a code block at lines 8–15"
    assert facts.parts["augmentation_code"].lines[0] == 37  # import albumentations as A
    assert facts.parts["augmentation_code"].evidence == "albumentations code in a code block at lines 37–44"
    assert facts.parts["training_log"].lines == [53, 58, 63, 68]
    assert "4 epochs" in facts.parts["training_log"].evidence
    assert facts.parts["results"].lines == [75]
    assert facts.parts["results"].evidence == "states accuracy 86.08% at line 75"
    assert facts.notes == []


def test_good_readme_images_local_and_remote() -> None:
    images = analyze_readme(FIXTURES / "readme_good").images
    assert [(i.target, i.line, i.exists, i.path) for i in images] == [
        ("static/curve.png", 77, True, "static/curve.png"),
        ("./static/curve.png", 79, True, "static/curve.png"),
        ("https://example.com/misclassified.png", 81, None, None),  # remote: not checked
    ]


def test_readme_missing_parts_and_assignment_text_is_no_result() -> None:
    facts = analyze_readme(FIXTURES / "readme_missing")
    assert facts.path == "README.md"
    assert not any(facts.parts[name].found for name in PART_NAMES)
    # "achieve 85% accuracy" is the assignment, not a stated result
    assert facts.parts["results"].evidence == "no stated final/best test accuracy"
    assert facts.images == []


def test_broken_image_links_are_flagged_and_readme_name_is_case_insensitive() -> None:
    facts = analyze_readme(FIXTURES / "readme_broken_image")
    assert facts.path == "Readme.md"
    assert [(i.target, i.exists) for i in facts.images] == [
        ("static/present.png", True),
        ("images/accuracy%20plot.png", False),
        ("plots/misclassified.png", False),
    ]
    assert facts.images[1].path == "images/accuracy plot.png"  # %20 decoded before looking
    assert facts.notes == [
        "line 4: image images/accuracy%20plot.png is not in the repository",
        "line 5: image plots/misclassified.png is not in the repository",
    ]


def test_no_readme(tmp_path: Path) -> None:
    facts = analyze_readme(tmp_path)
    assert facts.path is None
    assert not any(p.found for p in facts.parts.values())
    assert facts.notes == ["no README.md at the root or in the assignment folder"]


def test_assignment_folder_readme_wins_and_links_resolve_from_it(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# All sessions\n")
    s6 = tmp_path / "S6"
    s6.mkdir()
    (s6 / "model_s6.py").write_text("")
    (s6 / "README.md").write_text("See [the model](model_s6.py).\n![plot](/S6/plot.png)\n")
    (s6 / "plot.png").write_bytes(b"")
    facts = analyze_readme(tmp_path, s6)
    assert facts.path == "S6/README.md"
    assert facts.parts["model_code"].found
    assert facts.parts["model_code"].evidence == "link to S6/model_s6.py, which is in the repository"
    assert facts.images[0].exists is True  # a leading "/" is the repository root, as on GitHub


def test_model_code_link_must_exist_or_be_remote(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("Model: [model](src/net.py)\n")
    assert not analyze_readme(tmp_path).parts["model_code"].found
    (tmp_path / "README.md").write_text("Model: https://github.com/someone/s6/blob/main/net.py\n")
    part = analyze_readme(tmp_path).parts["model_code"]
    assert part.found and "GitHub" in part.evidence
    (tmp_path / "README.md").write_text(
        "1. Run this [network](https://colab.research.google.com/drive/assignment)\n"
        "## [Solution on Colab](https://colab.research.google.com/drive/solution)\n"
    )
    part = analyze_readme(tmp_path).parts["model_code"]
    assert part.found and part.lines == [2] and "drive/solution" in part.evidence  # not the assignment's link
    shutil.copy(FIXTURES / "notebooks" / "in_order.ipynb", tmp_path / "session6_assignment.ipynb")
    (tmp_path / "README.md").write_text(
        "[Solution on Colab](https://colab.research.google.com/drive/solution)\n"
        "Or, check out the committed notebook file - `session6_assignment.ipynb`\n"
    )
    part = analyze_readme(tmp_path).parts["model_code"]
    assert part.found and part.lines == [2]  # the file in the repository beats the Colab link
    assert part.evidence == "names session6_assignment.ipynb, which is in the repository"


def test_summary_found_from_torchinfo_table() -> None:
    facts = analyze_readme(FIXTURES / "readme_claims")
    assert facts.parts["summary"].found
    assert facts.parts["summary"].lines[0] == 25  # "Layer (type (var_name))"
    assert facts.parts["training_log"].found  # the markdown table
    assert not facts.parts["model_code"].found and not facts.parts["augmentation_code"].found
