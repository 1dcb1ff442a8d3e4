"""A long, realistic French transcript for the audio benchmark, the same every run.

``python -m bench.transcript_gen --minutes 90 --segments 1500 -o talk.json`` writes
it in the JSON form ``dubbing submit`` reads; :func:`dub_request` builds the
``dubbing.v1.DubRequest`` (French, provider ``local``, mp3 at 24 kHz) the benchmark
gives the worker.

What it looks like (seeded, so the same arguments give the same transcript):

- a few speakers taking turns, a speaker keeping the floor about half the time;
- windows of about 1-7 s with gaps of 0.1-3 s (mostly short), the last window
  ending exactly at the programme's length. The windows are scaled to fill the
  programme, so they keep these ranges at the default density (3.6 s a segment,
  e.g. 90 min / 1,500 or 180 min / 3,000);
- texts from a pool of real French sentences, short to long, picked against the
  window: most fit at the voice's normal rate, some are short for their window,
  some need a faster native rate and some a time stretch (or get truncated);
- about one segment in twelve starts a run of 2-4 short lines of one speaker, close
  together ("Oui." "Je vois."), which the worker stitches into one utterance.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dubbing.jobstate import duration
from dubbing.v1 import dubbing_pb2 as pb

# How fast the local French voice speaks at its normal rate: what a window "holds".
# Measured over POOL with espeak-ng fr at speed 1.0, silence excluded: 20 characters a
# second of speech for the short lines, 23-24 for the others.
CHARS_PER_SECOND = 23.0
SPEAKERS = ("Claire", "Marc", "Sophie", "Narrateur")

SHORT = (
    "Oui.",
    "Non.",
    "D'accord.",
    "Je vois.",
    "Exactement.",
    "Bien sûr.",
    "Pas du tout.",
    "C'est vrai.",
    "Merci beaucoup.",
    "Bonjour à tous.",
    "Tout à fait.",
    "Ah bon ?",
    "Vraiment ?",
    "Et alors ?",
    "C'est parti.",
    "Bonne question.",
    "Je ne sais pas.",
    "On y va ?",
    "Attends un peu.",
    "Voilà, c'est ça.",
    "Absolument.",
    "Pourquoi pas ?",
    "Ça marche.",
    "Je comprends.",
    "Pas encore.",
    "Très bien.",
    "C'est incroyable.",
    "Regarde ça.",
    "À demain !",
    "Bien vu.",
    "Continuez.",
    "Je t'écoute.",
    "Quelle histoire !",
    "C'est noté.",
    "Bon courage.",
)

MEDIUM = (
    "Bonjour et bienvenue dans notre studio.",
    "Aujourd'hui, nous parlons de doublage.",
    "Une voix de synthèse peut-elle remplacer un acteur ?",
    "Le tournage a commencé à l'aube, sous une pluie fine.",
    "Il faut compter trois heures de route jusqu'au village.",
    "Les pêcheurs rentrent au port avant la tombée de la nuit.",
    "Elle a passé dix ans à étudier le comportement des abeilles.",
    "Nous avons rendez-vous avec le maire à quatorze heures.",
    "Le marché couvert ouvre ses portes tous les samedis matin.",
    "Personne ne s'attendait à un tel succès.",
    "Les enfants ont construit une cabane au fond du jardin.",
    "Le train de nuit pour Vienne part à vingt-deux heures.",
    "Cette recette se transmet dans la famille depuis quatre générations.",
    "Je n'ai jamais vu autant de monde dans cette salle.",
    "La lumière change complètement en fin d'après-midi.",
    "On entend le vent siffler entre les rochers.",
    "Le glacier a reculé de plusieurs centaines de mètres.",
    "Mon grand-père réparait les horloges de tout le quartier.",
    "Il reste encore beaucoup de travail avant la première.",
    "Les musiciens accordent leurs instruments dans les coulisses.",
    "Au printemps, la vallée se couvre de fleurs sauvages.",
    "Vous pouvez répéter la dernière phrase, s'il vous plaît ?",
    "La bibliothèque municipale a fermé ses portes en mars.",
    "Le chef goûte chaque sauce avant le service.",
    "Nous avons perdu le signal pendant près d'une heure.",
    "Le phare guide les bateaux depuis plus d'un siècle.",
    "Cette découverte a changé notre manière de voir l'histoire.",
    "Les vendanges ont commencé avec deux semaines d'avance.",
    "Il faut garder le rythme sans presser la voix.",
    "Le public s'est levé pour applaudir pendant cinq minutes.",
    "On a retrouvé ces lettres dans une malle au grenier.",
    "La rivière déborde presque chaque hiver.",
    "Les archives de la ville conservent des plans du Moyen Âge.",
    "Elle parle quatre langues et en apprend une cinquième.",
    "Le festival attire des visiteurs du monde entier.",
    "J'ai gardé le carnet de mon premier voyage en Afrique.",
    "Les loups sont revenus dans ces montagnes il y a vingt ans.",
    "Le sous-titrage et le doublage ne posent pas les mêmes problèmes.",
    "Chaque réplique doit tenir dans sa fenêtre.",
    "Nous reprendrons l'enregistrement après la pause.",
    "La boulangerie du coin ouvre à six heures du matin.",
    "Ils ont traversé l'Atlantique à la voile en trente jours.",
    "Le directeur du musée nous a ouvert les réserves.",
    "C'est la première fois que ces images sont montrées au public.",
    "Le vieux pont de pierre a résisté à toutes les crues.",
    "Vous avez combien de temps pour terminer le montage ?",
    "L'équipe a dormi sous la tente pendant toute la mission.",
    "Je me souviens très bien de ce matin-là.",
    "Le son de la cloche porte jusqu'à l'autre rive.",
    "Les fouilles ont repris au début de l'été.",
    "Qu'est-ce qui vous a donné envie de faire ce métier ?",
    "On ne peut pas tout expliquer en une seule émission.",
    "Le prix du café a doublé en deux ans.",
    "Cette forêt abrite plus de deux cents espèces d'oiseaux.",
    "Le moteur a calé au milieu du col.",
    "Elle a écrit son premier roman à dix-neuf ans.",
    "La traduction doit respecter le ton de l'original.",
    "Il fait beaucoup plus froid ici que dans la vallée.",
    "Les ouvriers ont terminé la charpente en une semaine.",
    "Tu crois qu'on arrivera avant la nuit ?",
)

LONG = (
    "Aujourd'hui nous parlons du doublage et de la manière dont la voix doit tenir dans "
    "sa fenêtre sans jamais paraître pressée.",
    "Quand nous sommes arrivés sur l'île, le ferry avait déjà quatre heures de retard et "
    "la moitié du matériel était restée sur le quai.",
    "Les chercheurs ont installé des capteurs sur une centaine d'arbres pour mesurer la "
    "quantité d'eau qu'ils puisent chaque jour dans le sol.",
    "À l'époque, il fallait plusieurs semaines pour qu'une lettre traverse le pays, et "
    "les nouvelles arrivaient souvent trop tard.",
    "Ce qui m'a frappé, c'est le silence : pas une voiture, pas un avion, seulement le "
    "bruit des vagues contre la coque.",
    "La ville a décidé de transformer l'ancienne gare de marchandises en un grand parc "
    "ouvert à tous les habitants du quartier.",
    "Nous avons interrogé une trentaine de familles qui vivent ici depuis plusieurs "
    "générations, et toutes racontent la même histoire.",
    "Pour enregistrer ce concert, l'ingénieur du son a placé une douzaine de micros dans "
    "la salle, dont deux suspendus au plafond.",
    "Si la phrase traduite est beaucoup plus longue que l'originale, il faut soit "
    "accélérer la voix, soit raccourcir le texte.",
    "Le premier hiver a été terrible : la neige a bloqué la route pendant six semaines "
    "et le village a vécu sur ses réserves.",
    "Elle m'a expliqué que chaque motif du tissu raconte un événement précis de "
    "l'histoire de sa famille, depuis l'arrivée de ses ancêtres.",
    "Au bout de trois jours de marche, nous avons enfin aperçu les premières maisons, "
    "accrochées à la falaise au-dessus de la rivière.",
    "Les spécialistes estiment que la moitié des langues parlées aujourd'hui dans le "
    "monde pourraient disparaître avant la fin du siècle.",
    "Le réalisateur voulait que chaque scène soit tournée en une seule prise, ce qui "
    "obligeait les acteurs à connaître leur texte par cœur.",
    "On pense souvent que les déserts sont vides, mais la nuit, des milliers d'animaux "
    "sortent de leurs terriers pour chercher à manger.",
    "La restauration du tableau a duré deux ans, et les experts ont découvert sous la "
    "peinture un premier portrait que personne ne connaissait.",
    "Dans cette usine, on fabrique encore les couteaux à la main, comme au dix-neuvième "
    "siècle, avec les mêmes gestes et les mêmes outils.",
    "Les pêcheurs nous ont raconté que les poissons se font de plus en plus rares et "
    "qu'il faut aller toujours plus loin pour remplir les filets.",
    "Je crois que le plus difficile, dans ce métier, c'est d'accepter que le public ne "
    "verra jamais tout le travail qui se cache derrière une minute d'image.",
    "Le laboratoire reçoit chaque semaine des centaines d'échantillons venus des quatre "
    "coins du pays, et chacun doit être analysé en moins de deux jours.",
    "Après la fermeture de la mine, la plupart des jeunes sont partis travailler en "
    "ville, et l'école n'a plus qu'une seule classe.",
    "Le navigateur a dû réparer son mât en pleine tempête, seul, à plus de mille "
    "kilomètres de la côte la plus proche.",
    "Pendant la guerre, ces caves servaient d'abri à tout le quartier, et on y trouve "
    "encore des inscriptions gravées dans la pierre.",
    "Les ingénieurs ont calculé que le pont pourrait supporter le passage de trois "
    "trains de marchandises en même temps sans la moindre déformation.",
    "Ma mère chantait toujours cette chanson en préparant le repas du dimanche, et je ne "
    "peux pas l'entendre aujourd'hui sans penser à elle.",
    "Pour comprendre ce qui s'est passé cette nuit-là, il faut revenir quelques années "
    "en arrière, au moment où l'entreprise a changé de propriétaire.",
    "Les images satellites montrent que la forêt a perdu près d'un cinquième de sa "
    "surface en moins de vingt ans, surtout le long des routes.",
    "Le jury a mis plus de six heures à se mettre d'accord, et l'annonce du résultat a "
    "été accueillie par un long silence dans la salle.",
    "Au début, personne ne croyait à ce projet, et il a fallu convaincre les banques une "
    "par une avant de pouvoir poser la première pierre.",
    "Le vieux marin affirme qu'il reconnaît l'approche d'une tempête à l'odeur de "
    "l'air, bien avant que les instruments ne la détectent.",
    "Il y a dans cette région plus de trois cents kilomètres de sentiers balisés, qui "
    "traversent des forêts, des villages et des plateaux calcaires.",
    "La chorale répète deux fois par semaine dans l'église du village, et elle donne un "
    "concert chaque année pour la fête de la moisson.",
    "Notre équipe a suivi pendant un an le quotidien d'une sage-femme qui parcourt la "
    "montagne à moto pour rendre visite aux femmes enceintes.",
    "Les premiers résultats sont encourageants, mais il faudra encore plusieurs années "
    "d'observation avant de pouvoir tirer des conclusions solides.",
    "Le doublage automatique promet de rendre les documentaires accessibles dans des "
    "dizaines de langues, à condition que la voix reste naturelle et bien placée.",
    "En remontant le fleuve, on passe d'un paysage de rizières à une jungle si dense "
    "que la lumière du jour atteint à peine la surface de l'eau.",
    "Cette petite librairie a survécu à deux crises économiques, à l'arrivée des "
    "grandes surfaces et à la vente en ligne, grâce à la fidélité de ses clients.",
    "Chaque matin, avant l'ouverture, le gardien fait le tour du parc pour vérifier que "
    "les animaux ont passé une bonne nuit.",
    "Les archéologues pensent que ce site était un lieu de rencontre où plusieurs "
    "tribus venaient échanger des outils, des coquillages et des histoires.",
    "Il m'a fallu des mois pour gagner leur confiance, et ce n'est qu'à la fin du "
    "tournage qu'ils ont accepté de parler devant la caméra.",
    "Le vent s'est levé d'un coup, la mer est devenue grise, et le capitaine a donné "
    "l'ordre de rentrer au port sans attendre.",
    "Nous remercions chaleureusement toutes les personnes qui ont accepté de nous "
    "recevoir chez elles et de partager leurs souvenirs avec nous.",
    "Ce documentaire a été tourné sur trois continents, dans des conditions parfois "
    "difficiles, avec une équipe de seulement quatre personnes.",
    "La recette paraît simple, mais le secret tient dans la cuisson : trois heures à feu "
    "très doux, sans jamais soulever le couvercle.",
    "Quand le rideau s'est levé, j'ai oublié toute ma peur, et je me suis simplement "
    "laissé porter par la musique et par le public.",
)

# Every sentence, shortest first: texts are picked by length.
POOL = tuple(sorted(SHORT + MEDIUM + LONG, key=len))
# Lines short enough for a stitched run.
_RUN_LINES = tuple(s for s in SHORT if len(s) <= 20)

# Text length / what the window holds at the normal rate: (weight, low, high).
# Short for its window; fits; needs a faster native rate; needs a stretch or more.
_FILL = ((0.15, 0.2, 0.5), (0.55, 0.55, 1.0), (0.20, 1.05, 1.5), (0.10, 1.5, 2.2))
_RUN_PROBABILITY = 0.08
# Runs keep these windows and gaps unscaled, so that they stitch whatever the density
# (the worker stitches lines of at most 1.5 s with gaps of at most 0.3 s).
_RUN_DURATION = (0.8, 1.3)
_RUN_GAP = (0.1, 0.25)
_LEAD_IN = 0.5


@dataclass(frozen=True, slots=True)
class Line:
    start: float  # seconds, millisecond precision
    end: float
    text: str
    speaker: str


@dataclass
class _Draft:
    gap: float  # before this line
    length: float
    speaker: str
    run: bool  # part of a run of short lines: its length is fixed
    fixed_gap: bool = False  # inside a run: the gap is fixed too
    text: str = ""


def _pick_text(rng: random.Random, seconds: float, previous: str) -> str:
    weights = [w for w, _, _ in _FILL]
    _, low, high = rng.choices(_FILL, weights=weights)[0]
    target = seconds * CHARS_PER_SECOND * rng.uniform(low, high)
    # One of the four sentences closest in length, never the previous line again.
    nearest = sorted((s for s in POOL if s != previous), key=lambda s: abs(len(s) - target))
    return rng.choice(nearest[:4])


def _drafts(segments: int, rng: random.Random) -> list[_Draft]:
    drafts: list[_Draft] = []
    speaker = rng.choice(SPEAKERS)
    while len(drafts) < segments:
        if drafts and rng.random() >= 0.5:
            speaker = rng.choice([s for s in SPEAKERS if s != speaker])
        gap = _LEAD_IN if not drafts else 0.1 + 2.9 * rng.betavariate(1.2, 3.5)
        room = segments - len(drafts)
        if room >= 2 and rng.random() < _RUN_PROBABILITY:
            for k in range(min(room, rng.randint(2, 4))):
                run_gap = gap if k == 0 else rng.uniform(*_RUN_GAP)
                previous = drafts[-1].text if drafts else ""
                text = rng.choice([s for s in _RUN_LINES if s != previous])
                length = rng.uniform(*_RUN_DURATION)
                drafts.append(_Draft(run_gap, length, speaker, True, k > 0, text))
            continue
        length = min(7.0, max(1.0, rng.lognormvariate(1.12, 0.45)))
        drafts.append(_Draft(gap, length, speaker, False))
    return drafts


def generate(minutes: float = 90.0, segments: int = 1500, *, seed: int = 1) -> list[Line]:
    """`segments` lines whose last window ends at `minutes` (see the module docstring)."""
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    total = minutes * 60.0
    rng = random.Random(seed)
    drafts = _drafts(segments, rng)
    fixed = sum(d.length for d in drafts if d.run) + sum(d.gap for d in drafts if d.fixed_gap)
    flexible = sum(d.length for d in drafts if not d.run) + sum(
        d.gap for d in drafts if not d.fixed_gap
    )
    if total <= fixed or flexible <= 0:
        raise ValueError(f"{segments} segments do not fit in {minutes} minutes")
    scale = (total - fixed) / flexible
    lines: list[Line] = []
    clock = 0.0
    for d in drafts:
        clock += d.gap * (1.0 if d.fixed_gap else scale)
        start = clock
        clock += d.length * (1.0 if d.run else scale)
        previous = lines[-1].text if lines else ""
        text = d.text or _pick_text(rng, clock - start, previous)
        lines.append(Line(round(start, 3), round(clock, 3), text, d.speaker))
    last = lines[-1]
    lines[-1] = Line(last.start, round(total, 3), last.text, last.speaker)
    return lines


def dub_request(lines: Sequence[Line], *, request_id: str = "") -> pb.DubRequest:
    """French, local voice (female), mp3 at 24 kHz."""
    return pb.DubRequest(
        request_id=request_id,
        target_language="fr",
        provider="local",
        transcript=pb.TranscriptDubbing(
            script=pb.Transcript(
                segments=[
                    pb.Segment(
                        start=duration(x.start), end=duration(x.end), text=x.text, speaker=x.speaker
                    )
                    for x in lines
                ]
            ),
            voice=pb.Voice(gender=pb.GENDER_FEMALE),
            output=pb.OutputOptions(format=pb.AUDIO_FORMAT_MP3, sample_rate_hz=24_000),
        ),
    )


def to_json(lines: Sequence[Line]) -> str:
    """The ``{"segments": [...]}`` form ``dubbing submit`` reads, one segment a line."""
    rows = [
        json.dumps(
            {"start": x.start, "end": x.end, "speaker": x.speaker, "text": x.text},
            ensure_ascii=False,
        )
        for x in lines
    ]
    return '{"segments": [\n  ' + ",\n  ".join(rows) + "\n]}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=90.0)
    parser.add_argument("--segments", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, help="JSON file (default: stdout)")
    args = parser.parse_args()
    text = to_json(generate(args.minutes, args.segments, seed=args.seed))
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
